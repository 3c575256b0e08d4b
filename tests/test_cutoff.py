import math

import pytest
import torch

from nni_bap.cutoff import cutoff_scale, l2_to_rms, rms_to_l2


def _eta():
    # three perturbations with L2 norms 1, 2 and 6 and Linf norms 1, 2 and 3
    e = torch.zeros(3, 1, 2, 2)
    e[0, 0, 0, 0] = 1.0
    e[1, 0, 0, 0] = 2.0
    e[2, 0] = torch.tensor([[3.0, 3.0], [3.0, 3.0]])
    return e


def test_fixed_cut_l2():
    out, delta = cutoff_scale(_eta(), cutoff=1.5, scale=1.0, norm='l2')
    norms = out.flatten(1).norm(dim=1)
    assert float(delta) == 1.5
    assert norms.tolist() == pytest.approx([1.0, 1.5, 1.5])
    # direction kept
    assert torch.allclose(out[2] / norms[2], _eta()[2] / 6.0)


def test_adaptive_cut_is_batch_mean_then_scaled():
    out, delta = cutoff_scale(_eta(), cutoff='adaptive', scale=1.1, norm='l2')
    assert float(delta) == pytest.approx(3.0)
    assert out.flatten(1).norm(dim=1).tolist() == pytest.approx([1.1, 2.2, 3.3])


def test_linf_cut_and_scale():
    out, delta = cutoff_scale(_eta(), cutoff=2.5, scale=0.9, norm='linf')
    assert out.flatten(1).abs().amax(1).tolist() == pytest.approx([0.9, 1.8, 2.25])
    out, delta = cutoff_scale(_eta(), cutoff='adaptive', scale=1.0, norm='linf')
    assert float(delta) == pytest.approx(2.0)
    assert out.flatten(1).abs().amax(1).tolist() == pytest.approx([1.0, 2.0, 2.0])


def test_no_cut_and_zero_perturbations():
    out, delta = cutoff_scale(_eta(), cutoff=None, scale=2.0)
    assert math.isinf(float(delta))
    assert torch.allclose(out, 2 * _eta())
    out, _ = cutoff_scale(torch.zeros(4, 3), cutoff='adaptive')
    assert torch.count_nonzero(out) == 0


def test_bad_cutoff():
    with pytest.raises(ValueError):
        cutoff_scale(_eta(), cutoff='mean')
    with pytest.raises(ValueError):
        cutoff_scale(_eta(), cutoff=-1)


def test_rms_conversion():
    assert rms_to_l2(0.2, (1, 28, 28)) == pytest.approx(5.6)
    assert l2_to_rms(rms_to_l2(0.1, (1, 8, 8)), (1, 8, 8)) == pytest.approx(0.1)
