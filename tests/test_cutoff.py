import math

import pytest
import torch

from nni_bap.attacks import flat_norm
from nni_bap.pruning.cutoff import (
    check_cutoff,
    cutoff_scale,
    l2_to_rms,
    resolve_cutoff,
    rms_to_l2,
)


def _eta():
    # three perturbations with L2 norms 1, 2 and 6 and Linf norms 1, 2 and 3
    e = torch.zeros(3, 1, 2, 2)
    e[0, 0, 0, 0] = 1.0
    e[1, 0, 0, 0] = 2.0
    e[2, 0] = torch.tensor([[3.0, 3.0], [3.0, 3.0]])
    return e


def test_fixed_cut_l2():
    out, cut = cutoff_scale(_eta(), cutoff=1.5, scale=1.0, norm='l2')
    norms = out.flatten(1).norm(dim=1)
    assert float(cut) == 1.5
    assert norms.tolist() == pytest.approx([1.0, 1.5, 1.5])
    # direction kept
    assert torch.allclose(out[2] / norms[2], _eta()[2] / 6.0)


def test_adaptive_cut_is_batch_mean_then_scaled():
    out, cut = cutoff_scale(_eta(), cutoff='adaptive', scale=1.1, norm='l2')
    assert float(cut) == pytest.approx(3.0)
    assert out.flatten(1).norm(dim=1).tolist() == pytest.approx([1.1, 2.2, 3.3])


def test_linf_cut_and_scale():
    out, cut = cutoff_scale(_eta(), cutoff=2.5, scale=0.9, norm='linf')
    assert out.flatten(1).abs().amax(1).tolist() == pytest.approx([0.9, 1.8, 2.25])
    out, cut = cutoff_scale(_eta(), cutoff='adaptive', scale=1.0, norm='linf')
    assert float(cut) == pytest.approx(2.0)
    assert out.flatten(1).abs().amax(1).tolist() == pytest.approx([1.0, 2.0, 2.0])


def test_no_cut_and_zero_perturbations():
    out, cut = cutoff_scale(_eta(), cutoff=None, scale=2.0)
    assert math.isinf(float(cut))
    assert torch.allclose(out, 2 * _eta())
    out, _ = cutoff_scale(torch.zeros(4, 3), cutoff='adaptive')
    assert torch.count_nonzero(out) == 0


def test_bad_cutoff():
    with pytest.raises(ValueError):
        cutoff_scale(_eta(), cutoff='mean')
    with pytest.raises(ValueError):
        cutoff_scale(_eta(), cutoff=-1)


@pytest.mark.parametrize('bad', [math.nan, math.inf, -0.1, True, 'mean', [1.0]])
def test_check_cutoff_refuses_what_is_not_a_radius(bad):
    """Issue 10 case 7 (settings validated): one check for the cutoff, shared by the generator and resolve_cutoff;
    NaN, infinity (use None), bools and lists were accepted or failed with an unrelated error."""
    with pytest.raises(ValueError, match=r"^cutoff must be a finite number >= 0, 'adaptive' or None \(no cut\), got "):
        check_cutoff(bad)
    with pytest.raises(ValueError, match='^cutoff must be'):
        resolve_cutoff(torch.ones(3), bad)
    assert check_cutoff(2) == 2.0 and isinstance(check_cutoff(2), float)
    assert check_cutoff('adaptive') == 'adaptive' and check_cutoff(None) is None


@pytest.mark.parametrize('bad', [0, -1.0, math.nan])
def test_cutoff_scale_refuses_a_bad_scale(bad):
    """Issue 10 case 7 (settings validated): scale <= 0 or NaN used to zero (or NaN) every perturbation silently."""
    with pytest.raises(ValueError, match=f'^scale must be a finite number > 0, got {bad!r}'):
        cutoff_scale(_eta(), cutoff='adaptive', scale=bad)


def test_rms_conversion():
    assert rms_to_l2(0.2, (1, 28, 28)) == pytest.approx(5.6)
    assert l2_to_rms(rms_to_l2(0.1, (1, 8, 8)), (1, 8, 8)) == pytest.approx(0.1)


def _batch():
    """Four perturbations with L2 norms 0, 0.5, 1.0 and 2.0; the first sample needed none (misclassified)."""
    eta = torch.zeros(4, 1, 2, 2)
    eta[1, 0, 0] = torch.tensor([0.3, 0.4])
    eta[2, 0, 1] = torch.tensor([0.6, 0.8])
    eta[3, 0] = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    return eta


def test_adaptive_cutoff_is_the_mean_over_perturbed_samples():
    """Old bias: the zero norm entered the mean, giving 3.5 / 4 = 0.875; now 3.5 / 3."""
    out, cut = cutoff_scale(_batch(), cutoff='adaptive', scale=1.0, norm='l2')
    assert float(cut) == pytest.approx(3.5 / 3, abs=1e-6)
    assert flat_norm(out, 'l2').tolist() == pytest.approx([0.0, 0.5, 1.0, 3.5 / 3], abs=1e-6)
    # the cut keeps the direction of the only sample above the radius
    assert torch.allclose(out[3], _batch()[3] * (3.5 / 3) / 2.0, atol=1e-7)
    # Linf norms 0, 0.4, 0.8, 1.0 -> radius 2.2 / 3
    _, cut = cutoff_scale(_batch(), cutoff='adaptive', scale=1.0, norm='linf')
    assert float(cut) == pytest.approx(2.2 / 3, abs=1e-6)


def test_adaptive_cutoff_is_zero_when_nothing_was_perturbed():
    assert float(resolve_cutoff(torch.zeros(5), 'adaptive')) == 0.0
    assert float(resolve_cutoff(torch.zeros(0), 'adaptive')) == 0.0
    out, cut = cutoff_scale(torch.zeros(3, 4), cutoff='adaptive', scale=1.3)
    assert float(cut) == 0.0 and torch.count_nonzero(out) == 0
    # a fixed number is still itself, zeros or not
    assert float(resolve_cutoff(torch.tensor([0.0, 2.0]), 1.5)) == 1.5
