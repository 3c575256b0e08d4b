"""Issue 20's levers of BAPPruner (nni_bap/pruning: budget_cap, margin_step, norm_mix, kl_term, bap_levers,
bap_presets), each mechanism on a small case with numbers; the defaults stay the paper's BAP."""
import copy
import inspect
import json
import math

import pytest
import torch
from nni.compression.pruning import LevelPruner
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nni_bap import BAPPruner
from nni_bap.attacks import DeepFool, flat_norm
from nni_bap.cli.config import RunConfig
from nni_bap.cli.main import main
from nni_bap.errors import ConfigError
from nni_bap.pruning.bap_levers import build_levers
from nni_bap.pruning.bap_presets import BAP_PRESETS, PRESET_NOTES
from nni_bap.pruning.budget_cap import CappedGenerator, cap_norms
from nni_bap.pruning.cutoff import cutoff_scale
from nni_bap.pruning.deepfool_cut import DeepFoolCut
from nni_bap.pruning.generators import BlindGenerator
from nni_bap.pruning.kl_term import kl_divergence
from nni_bap.pruning.margin_step import MarginStep, MarginStepGenerator
from nni_bap.pruning.methods import (
    METHODS,
    check_method_settings,
    family_of,
    parse_method,
)
from nni_bap.pruning.norm_mix import NormMix
from nni_bap.pruning.training import make_evaluator

CFG = [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.5}]


def _eta():
    # three perturbations with L2 norms 1, 2 and 6 (batch mean 3)
    e = torch.zeros(3, 1, 2, 2)
    e[0, 0, 0, 0] = 1.0
    e[1, 0, 0, 0] = 2.0
    e[2, 0] = 3.0
    return e


# ---- cap: a budget that can grow past the batch mean --------------------------------------------------------

def test_cap_lets_a_budget_exceed_the_batch_mean():
    held, cut = cutoff_scale(_eta(), cutoff='adaptive')
    assert float(cut) == pytest.approx(3.0)
    assert flat_norm(held, 'l2').tolist() == pytest.approx([1.0, 2.0, 3.0])   # 6 held at the mean 3
    grown, _ = cutoff_scale(_eta(), cutoff=None)
    grown = cap_norms(grown, 5.0, 'l2')
    assert flat_norm(grown, 'l2').tolist() == pytest.approx([1.0, 2.0, 5.0])  # 6 grows to the cap 5 > 3
    assert torch.allclose(grown[2] / 5.0, _eta()[2] / 6.0)                     # direction kept
    assert cap_norms(_eta(), None, 'l2') is not None and torch.equal(cap_norms(_eta(), None, 'l2'), _eta())
    assert flat_norm(cap_norms(_eta(), 2.5, 'linf'), 'linf').tolist() == pytest.approx([1.0, 2.0, 2.5])


def test_capped_generator_on_a_model(dense_digits, digits):
    x, y = digits.x_test[:64], digits.y_test[:64]
    free = DeepFoolCut(attack_steps=5, candidates=2, cutoff=None)
    capped = CappedGenerator(DeepFoolCut(attack_steps=5, candidates=2, cutoff=None), 1.0, 'l2')
    torch.manual_seed(0)
    x_free, s_free = free(dense_digits, x, y)
    x_cap, s_cap = capped(dense_digits, x, y)
    n_free, n_cap = flat_norm(x_free - x, 'l2'), flat_norm(x_cap - x, 'l2')
    assert float(n_cap.max()) <= 1.0 + 1e-5
    assert torch.allclose(n_cap, n_free.clamp(max=1.0), atol=1e-5)
    mean = float(n_free[n_free > 0].mean())
    assert float(n_cap.max()) > mean                       # some budgets above the batch mean the cutoff would impose
    assert s_cap['capped'] == pytest.approx(float((n_free > 1.0).float().mean()))
    assert capped.clip_min == 0.0 and capped.warm_start is False   # the wrapped generator's attributes


# ---- margin -> one step ----------------------------------------------------------------------------------------

def _linear_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


@pytest.mark.parametrize('norm', ['linf', 'l2'])
def test_margin_step_eps_is_rho_times_deepfool_distance_clipped(norm):
    model = _linear_model().eval()
    torch.manual_seed(1)
    x = torch.randn(64, 1, 4, 4)
    y = model(x).argmax(1)                                   # all correctly classified
    found = DeepFool(model, steps=1, overshoot=0.0, norm=norm, candidates=2, clip_min=None, clip_max=None).attack(x, y)
    d = flat_norm(found.eta, norm)                           # DeepFool's distance (exact: the model is linear)
    rho, cap = 1.5, float(d.median())
    eps = MarginStep(model, norm=norm, scale=rho, cap=cap, clip_min=None, clip_max=None).attack(x, y)[1]
    assert torch.allclose(eps, (rho * d).clamp(max=cap), rtol=1e-4, atol=1e-6)
    assert float((eps == cap).float().mean()) >= 0.5        # the cap binds for half the samples or more
    x_adv, eps1, _ = MarginStep(model, norm=norm, scale=1.0, clip_min=None, clip_max=None).attack(x, y)
    assert torch.allclose(flat_norm(x_adv - x, norm), eps1, rtol=1e-4, atol=1e-6)   # it moves exactly eps_i
    logits = model(x_adv)
    top2 = logits.topk(2, dim=1).values
    assert float((top2[:, 0] - top2[:, 1]).abs().max()) < 1e-3   # rho = 1 lands on the (linear) boundary


def test_margin_step_cutoff_noise_and_misclassified_samples():
    model = _linear_model().eval()
    torch.manual_seed(2)
    x = torch.randn(32, 1, 4, 4)
    pred = model(x).argmax(1)
    y = pred.clone()
    y[:4] = (pred[:4] + 1) % 3                              # four samples misclassified from the start
    step = MarginStep(model, norm='linf', cutoff='adaptive', clip_min=None, clip_max=None)
    x_adv, eps, margin = step.attack(x, y)
    assert margin.crossed[:4].all() and not margin.crossed[4:].any()
    assert torch.equal(eps[:4], torch.zeros(4)) and torch.equal(x_adv[:4], x[:4])   # trained clean
    d = margin.distance[4:]
    assert torch.allclose(eps[4:], d.clamp(max=float(d.mean())), atol=1e-6)      # cut at the batch mean
    noisy = MarginStep(model, norm='linf', cap=0.1, noise=2.0, clip_min=None, clip_max=None)
    torch.manual_seed(0)
    xn, en, _ = noisy.attack(x, y)
    assert float(flat_norm(xn - x, 'linf').max()) <= 3 * 0.1 + 1e-6                 # noise 2 eps plus the step
    assert float(flat_norm(xn - x, 'linf')[4:].min()) > float(en[4:].min()) - 1e-6
    with pytest.raises(ValueError, match='^noise must be a finite number >= 0'):
        MarginStepGenerator(noise=-1.0)
    with pytest.raises(ValueError, match='^cap must be a finite number > 0 or None'):
        MarginStepGenerator(cap=0.0)


def test_margin_step_is_box_aware(dense_digits, digits):
    x, y = digits.x_test[:64], digits.y_test[:64]
    gen = MarginStepGenerator(norm='linf', cap=0.3, scale=2.0)
    x_adv, stats = gen(dense_digits, x, y)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert 0 < stats['perturbed'] <= 1 and stats['eps_p90'] <= 0.3 + 1e-6 and stats['cap'] == 0.3
    assert dense_digits.training is False


# ---- both norms -------------------------------------------------------------------------------------------------

class _Stub:
    clip_min, clip_max = 0.0, 1.0

    def __init__(self, tag):
        self.tag, self.sizes = tag, []

    def __call__(self, model, x, y):
        self.sizes.append(x.shape[0])
        return x + self.tag, {'cut_norm_mean': self.tag}


def test_norm_alternation_visits_both_norms():
    l2, linf = _Stub(0.01), _Stub(0.02)
    mix = NormMix({'l2': l2, 'linf': linf}, 'alternate')
    x, y = torch.zeros(6, 1, 2, 2), torch.zeros(6, dtype=torch.long)
    used = [mix(None, x, y, step=t)[1]['linf_share'] for t in range(5)]
    assert used == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert mix.visits == {'l2': 3, 'linf': 2} and l2.sizes == [6, 6, 6] and linf.sizes == [6, 6]
    split = NormMix({'l2': _Stub(0.01), 'linf': _Stub(0.02)}, 'split')
    x_adv, stats = split(None, torch.zeros(7, 1, 2, 2), torch.zeros(7, dtype=torch.long), step=0)
    assert split.visits == {'l2': 1, 'linf': 1} and stats['linf_share'] == pytest.approx(4 / 7)
    assert x_adv[:3].eq(0.01).all() and x_adv[3:].eq(0.02).all()
    assert set(stats) == {'l2_cut_norm_mean', 'linf_cut_norm_mean', 'linf_share'}


def _pruner(dense_digits, digits, **settings):
    model = copy.deepcopy(dense_digits)
    loader = DataLoader(TensorDataset(digits.x_train[:128], digits.y_train[:128]), batch_size=32)
    base = LevelPruner(model, CFG, evaluator=make_evaluator(model, loader, progress=False))
    return BAPPruner(base, 2, 2, log_interval=0, **settings)


@pytest.mark.parametrize('mix', ['alternate', 'split'])
def test_pruner_with_both_norms(mix, dense_digits, digits):
    pruner = _pruner(dense_digits, digits, norm='both', mix=mix, step={'l2': 'deepfool', 'linf': 'margin'},
                     cutoff={'l2': 'adaptive', 'linf': None}, cap={'l2': None, 'linf': 0.3})
    pruner.compress(max_steps=4, max_epochs=None)
    gens = pruner.generator.levers.generators
    assert isinstance(gens['l2'], DeepFoolCut) and isinstance(gens['linf'], MarginStepGenerator)
    assert pruner.generator.needs_step is True
    assert pruner.generator.levers.visits == ({'l2': 2, 'linf': 2} if mix == 'alternate' else {'l2': 4, 'linf': 4})
    summary = pruner.summary()
    assert summary['linf_share'] == pytest.approx(0.5) and summary['linf_eps_p90'] <= 0.3 + 1e-6
    assert 'l2_cutoff' in summary and summary['steps'] == 4.0


# ---- the KL term ------------------------------------------------------------------------------------------------

def test_kl_term_on_a_known_pair():
    target = torch.log(torch.tensor([[0.5, 0.5]]))
    other = torch.log(torch.tensor([[0.8, 0.2]]))
    expected = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)
    assert float(kl_divergence(target, other)) == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.2231, abs=1e-4)
    assert float(kl_divergence(other, other)) == pytest.approx(0.0, abs=1e-7)
    both = kl_divergence(torch.cat([target, other]), torch.cat([other, other]))
    assert float(both) == pytest.approx(expected / 2, abs=1e-6)      # batch mean
    logits = other.clone().requires_grad_(True)
    kl_divergence(target, logits).backward()
    assert torch.allclose(logits.grad, torch.tensor([[0.3, -0.3]]), atol=1e-6)   # softmax(logits) - target


def test_pruner_adds_the_kl_term(dense_digits, digits):
    pruner = _pruner(dense_digits, digits, kl_weight=2.0, step='margin', norm='linf', cutoff=None, cap=0.3)
    pruner.compress(max_steps=4, max_epochs=None)
    assert all(s['kl'] > 0 for s in pruner.statistics) and pruner.kl_weight == 2.0


# ---- settings: validated in the constructor, named; presets and suffixes -------------------------------------

@pytest.mark.parametrize('settings, message', [
    ({'step': 'pgd'}, "^step must be 'deepfool' or 'margin', got 'pgd'$"),
    ({'cap': 0}, '^cap must be a finite number > 0 or None'),
    ({'noise': 1.0}, "^noise applies to step 'margin' only"),
    ({'norm': 'l1'}, "^norm must be 'l2', 'linf' or 'both', got 'l1'$"),
    ({'norm': 'both', 'mix': 'zip'}, "^mix must be 'alternate' or 'split', got 'zip'$"),
    ({'cap': {'l2': 3.0}}, "^cap may map norms to values only with norm='both'"),
    ({'norm': 'both', 'cap': {'l2': 3.0}}, "^cap must map exactly 'l2' and 'linf'"),
    ({'kl_weight': -1}, '^kl_weight must be a finite number >= 0, got -1$'),
    ({'step': 'margin', 'warm_start': True}, '^warm_start works with one norm'),
])
def test_bad_lever_settings_refused_in_one_line(settings, message, dense_digits, digits):
    model = copy.deepcopy(dense_digits)
    loader = DataLoader(TensorDataset(digits.x_train[:64], digits.y_train[:64]), batch_size=32)
    base = LevelPruner(model, CFG, evaluator=make_evaluator(model, loader, progress=False))
    with pytest.raises(ConfigError, match=message) as err:
        BAPPruner(base, 1, 1, **settings)
    assert '\n' not in str(err.value)
    with pytest.raises(ConfigError):
        check_method_settings('bap', settings)


def test_default_is_the_papers_bap(dense_digits, digits):
    """Every lever at its default: no composed generator, the same AEs and statistics as the paper's DeepFoolCut."""
    assert build_levers() is None and build_levers(norm='linf') is None
    gen = BlindGenerator()
    assert gen.levers is None and gen.cutoff == 'adaptive' and gen.norm == 'l2' and gen.scale == 1.0
    assert gen.needs_step is False and gen.kl_weight == 0.0
    x, y = digits.x_test[:32], digits.y_test[:32]
    a, sa = gen(dense_digits, x, y)
    b, sb = DeepFoolCut()(dense_digits, x, y)
    assert torch.equal(a, b) and sa == sb
    defaults = {k: p.default for k, p in inspect.signature(BAPPruner).parameters.items()}
    assert (defaults['step'], defaults['cap'], defaults['noise'], defaults['mix'], defaults['kl_weight']) == (
        'deepfool', None, 0.0, 'alternate', 0.0)


def test_warm_start_with_a_cap_keeps_the_inner_warm_starts():
    gen = BlindGenerator(cap=1.0, warm_start=True)
    assert isinstance(gen.levers, CappedGenerator) and gen.warm is gen.levers.inner.warm and gen.warm_start


def test_presets_and_suffixes():
    sections = RunConfig().sections
    assert parse_method('bap-margin', sections) == ('bap', {'step': 'margin', 'norm': 'linf', 'cutoff': None,
                                                            'cap': 0.3})
    fam, args = parse_method('bap-margin-s1.5-k0.45-n1-kl2', sections)
    assert args == {'step': 'margin', 'norm': 'linf', 'cutoff': None, 'cap': 0.45, 'scale': 1.5, 'noise': 1.0,
                    'kl_weight': 2.0}
    check_method_settings(fam, args)
    assert parse_method('bap-c3.0', sections) == ('bap', {'cutoff': 3.0})     # the old syntax still works
    assert parse_method('bap-s1.5-k3', sections) == ('bap', {'scale': 1.5, 'cap': 3.0})
    for bad in ('bap-nope', 'adversarial-margin', 'natural-margin', 'bap-margin-fgsm0.1', 'bap-mix-', 'bap-'):
        with pytest.raises(ConfigError):
            parse_method(bad, sections)
    cfg = RunConfig.from_dict({'method': 'bap-mix', 'bap': {'kl_weight': 1.0}})
    assert cfg.family == 'bap' and cfg.method_args['kl_weight'] == 1.0 and cfg.method_args['norm'] == 'both'
    cfg.method_args['cap']['linf'] = 9.0                                       # a copy: the preset stays
    assert BAP_PRESETS['mix']['cap']['linf'] == 0.3


@pytest.mark.parametrize('name', sorted(BAP_PRESETS))
def test_every_preset_is_a_registered_bap_method(name):
    entry = METHODS.entry(f'bap-{name}')
    assert family_of(entry) == 'bap' and entry.preset == BAP_PRESETS[name] and entry.note == PRESET_NOTES[name]
    family, args = parse_method(f'bap-{name}')
    assert check_method_settings(family, args)['step'] in ('deepfool', 'margin', {'l2': 'deepfool', 'linf': 'margin'})
    assert BlindGenerator(**args).levers is not None or name == 'linf'


def test_bap_prune_runs_a_preset(tmp_path):
    """``bap prune`` takes a preset name like any method (both norms, alternating, here)."""
    cfg = {'dense_epochs': 1, 'epochs': 1, 'total_times': 2, 'train_limit': 128, 'test_limit': 64,
           'method': 'bap-mix', 'config_list': [{'op_types': ['Linear'], 'sparse_ratio': 0.5}]}
    path = tmp_path / 'cfg.json'
    path.write_text(json.dumps(cfg))
    assert main(['--quiet', 'prune', str(path), '--out', str(tmp_path / 'run')]) == 0
    run = json.loads((tmp_path / 'run' / 'run.json').read_text())
    assert run['method_args']['norm'] == 'both' and run['method_args']['step']['linf'] == 'margin'
