import copy
import math

import pytest
import torch
from cases import RANGE_MESSAGE
from cases import digits_net as _net
from cases import normalised as _normalised
from nni.compression.base.compressor import Pruner
from nni.compression.pruning import AGPPruner, L1NormPruner, LevelPruner
from torch.utils.data import DataLoader, Dataset, TensorDataset

from nni_bap import AdversarialPruner, BAPPruner, NNIUsageError, apply_masks, finalize
from nni_bap.attacks import PGD, DeepFool, flat_norm
from nni_bap.models import build_model
from nni_bap.pruning.prune import prune
from nni_bap.pruning.schedule import SCHEDULES, schedule_ratio
from nni_bap.pruning.training import accuracy, make_evaluator

CFG = [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.8}]
ARGS = {'natural': {}, 'adversarial': {'eps': 0.1}, 'bap': {}}


def _loader(digits, n=256):
    return DataLoader(TensorDataset(digits.x_train[:n], digits.y_train[:n]), batch_size=32, shuffle=True)


@pytest.mark.parametrize('cls', [BAPPruner, AdversarialPruner])
def test_is_an_nni_pruner_used_like_agp(cls, dense_digits, digits):
    model = copy.deepcopy(dense_digits)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    base = LevelPruner(model, CFG, evaluator=make_evaluator(model, _loader(digits), progress=False))
    pruner = cls(base, interval_steps=4, total_times=4, log_interval=0)
    assert isinstance(pruner, Pruner)
    _, masks = pruner.compress(max_steps=24, max_epochs=None)
    assert len(pruner.statistics) == 24
    s = pruner.statistics
    assert s[0]['sparsity'] == 0.0 and s[-1]['sparsity'] == pytest.approx(0.8, abs=0.01)
    assert all(a['sparsity'] <= b['sparsity'] for a, b in zip(s, s[1:]))
    assert 0.0 <= s[-1]['ae_error'] <= 1.0 and s[-1]['cut_norm_mean'] > 0
    plain = finalize(pruner)
    for name, param in plain.named_parameters():
        if name.endswith('weight'):
            assert float((param == 0).float().mean()) == pytest.approx(0.8, abs=0.01), name
        # the weights really changed during compress (guards NNI's empty-optimizer failure)
        kept = param != 0
        assert float((param != before[name])[kept].float().mean()) > 0.5, name


def test_bap_statistics_record_the_cut(dense_digits, digits):
    model = copy.deepcopy(dense_digits)
    base = LevelPruner(model, CFG, evaluator=make_evaluator(model, _loader(digits), progress=False))
    pruner = BAPPruner(base, interval_steps=2, total_times=2, cutoff='adaptive', scale=0.9, log_interval=0)
    pruner.compress(max_steps=6, max_epochs=None)
    for s in pruner.statistics:
        # the adaptive cutoff is the mean over the perturbed samples only (eta = 0 ones left out)
        assert 0 < s['perturbed'] <= 1
        assert s['cutoff'] == pytest.approx(s['norm_mean'] / s['perturbed'], rel=1e-5)
        assert s['cut_norm_p90'] <= 0.9 * s['cutoff'] + 1e-4
        assert 'delta' not in s
        assert s['cut_norm_mean'] < s['norm_mean']
    assert set(pruner.summary()) >= {'norm_mean', 'cut_norm_mean', 'ae_error', 'final_sparsity'}


def test_evaluator_on_scheduler_is_refused(dense_digits, digits):
    model = copy.deepcopy(dense_digits)
    ev = make_evaluator(model, _loader(digits), progress=False)
    with pytest.raises(NNIUsageError, match='base pruner'):
        BAPPruner(LevelPruner(model, CFG), 2, 2, ev)
    with pytest.raises(NNIUsageError, match='no evaluator'):
        BAPPruner(LevelPruner(copy.deepcopy(dense_digits), CFG), 2, 2)


def test_nni_trap_is_real(dense_digits, digits):
    """Documents why the guard exists: NNI's own AGPPruner trains nothing in that placement."""
    model = copy.deepcopy(dense_digits)
    before = model.features[0].weight.detach().clone()
    ev = make_evaluator(model, _loader(digits), progress=False)
    agp = AGPPruner(LevelPruner(model, CFG), 2, 2, ev)
    agp.compress(max_steps=6, max_epochs=None)
    agp.unwrap_model()
    assert torch.equal(model.features[0].weight, before)


def test_unwrap_restores_dense_weights_but_finalize_does_not(dense_digits, digits):
    model = copy.deepcopy(dense_digits)
    base = LevelPruner(model, CFG, evaluator=make_evaluator(model, _loader(digits), progress=False))
    pruner = BAPPruner(base, 2, 2, log_interval=0)
    _, masks = pruner.compress(max_steps=4, max_epochs=None)
    x = digits.x_test[:32]
    with torch.no_grad():
        masked_logits = model(x)
    pruner.unwrap_model()
    assert float((model.features[0].weight == 0).float().mean()) < 0.01   # NNI's trap: dense again
    apply_masks(model, masks)
    assert float((model.features[0].weight == 0).float().mean()) == pytest.approx(0.8, abs=0.02)
    assert torch.allclose(model(x), masked_logits, atol=1e-5)
    assert finalize(pruner) is model  # harmless on an unwrapped model


def test_structured_base_pruner_and_linear_schedule(dense_digits, digits):
    model = copy.deepcopy(dense_digits)
    cfg = [{'op_types': ['Conv2d'], 'sparse_ratio': 0.5}]
    base = L1NormPruner(model, cfg, evaluator=make_evaluator(model, _loader(digits), progress=False))
    pruner = BAPPruner(base, 2, 4, schedule='linear', candidates=3, log_interval=0)
    pruner.compress(max_steps=10, max_epochs=None)
    sp = [s['sparsity'] for s in pruner.statistics]
    plain = finalize(pruner)
    w = plain.features[0].weight
    assert float((w.flatten(1).abs().sum(1) == 0).float().mean()) == pytest.approx(0.5, abs=0.07)
    assert len(set(round(v, 4) for v in sp)) >= 4


@pytest.mark.parametrize('schedule, levels', [('linear', [0.2, 0.4, 0.6, 0.8]),
                                              ('agp', [0.8 * (1 - 0.75 ** 3), 0.8 * (1 - 0.5 ** 3), 0.8 * (1 - 0.25 ** 3), 0.8])])
def test_pruner_follows_its_schedule(schedule, levels, dense_digits, digits):
    """Issue 10: the linear-schedule test could not tell linear from AGP; the sparsity levels the pruner reaches
    after each of its four updates are those of its schedule."""
    model = copy.deepcopy(dense_digits)
    base = LevelPruner(model, CFG, evaluator=make_evaluator(model, _loader(digits), progress=False))
    pruner = BAPPruner(base, 2, 4, schedule=schedule, log_interval=0)
    pruner.compress(max_steps=10, max_epochs=None)
    reached = sorted({round(s['sparsity'], 3) for s in pruner.statistics} - {0.0})
    assert reached == pytest.approx(levels, abs=0.005)


@pytest.mark.parametrize('name', sorted(SCHEDULES))
def test_schedules(name):
    assert schedule_ratio(name, 0, 10) == 0.0 and schedule_ratio(name, 10, 10) == 1.0
    vals = [schedule_ratio(name, t, 10) for t in range(11)]
    assert all(a < b for a, b in zip(vals, vals[1:]))
    expected = {'agp': 1 - 0.7 ** 3, 'linear': 0.3}
    assert vals[3] == pytest.approx(expected[name])
    with pytest.raises(ValueError):
        schedule_ratio('cosine', 1, 10)


def test_bad_settings_refused(dense_digits, digits):
    model = copy.deepcopy(dense_digits)
    base = LevelPruner(model, CFG, evaluator=make_evaluator(model, _loader(digits), progress=False))
    with pytest.raises(ValueError, match='schedule'):
        BAPPruner(base, 2, 2, schedule='cosine')
    with pytest.raises(ValueError, match='adv_weight'):
        BAPPruner(base, 2, 2, adv_weight=1.5)


def test_bap_more_robust_than_natural_at_08(dense_digits, digits):
    x, y = digits.x_test, digits.y_test
    out = {}
    for method in ('natural', 'bap'):
        r = prune(dense_digits, digits.train_set(), CFG, method=method, epochs=10, progress=False, seed=0)
        torch.manual_seed(0)
        out[method] = dict(
            clean=accuracy(r.model, x, y),
            median_l2=float(flat_norm(DeepFool(r.model, steps=50).attack(x, y).eta, 'l2').median()),
            pgd=accuracy(r.model, PGD(r.model, eps=0.1, steps=20)(x, y), y))
    nat, bap = out['natural'], out['bap']
    assert bap['median_l2'] > nat['median_l2'] * 1.1, out
    assert bap['pgd'] > nat['pgd'] + 0.03, out
    assert abs(bap['clean'] - nat['clean']) <= 0.03, out


def _mask(n: int, zeros: int) -> torch.Tensor:
    m = torch.ones(n)
    m[:zeros] = 0
    return m


def test_sparsity_check_judges_a_global_group_as_a_whole():
    from nni_bap.errors import SparsityError
    from nni_bap.pruning.sparsity import check_sparsity
    masks = {'a': {'weight': _mask(100, 90)}, 'b': {'weight': _mask(100, 100)}}  # 0.90 and 1.00: 0.95 together
    grouped = {'a': (0.95, 'element', 0), 'b': (0.95, 'element', 0)}
    assert check_sparsity(masks, grouped) == pytest.approx({'target': 0.95, 'measured': 0.95})
    with pytest.raises(SparsityError, match='layer a reached sparsity 0.900, target 0.950'):
        check_sparsity(masks, {'a': (0.95, 'element', None), 'b': (0.95, 'element', None)})
    short = {'a': {'weight': _mask(100, 50)}, 'b': {'weight': _mask(100, 100)}}
    with pytest.raises(SparsityError, match='global group 0 reached sparsity 0.750'):
        check_sparsity(short, grouped)


def test_global_sparsity_prunes_lenet_to_its_target(digits):
    """NNI's global_group_id spreads one sparsity over the layers; the run keeps the overall target."""
    from nni_bap.pruning.prune import prune
    torch.manual_seed(0)
    model = build_model('digits_cnn', in_channels=1, input_size=8, num_classes=10)
    cfg = [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.8, 'global_group_id': 0}]
    result = prune(model, digits.train_set(), cfg, method='natural', epochs=1, total_times=2, progress=False)
    per_layer = [float((m['weight'] == 0).float().mean()) for m in result.masks.values()]
    assert result.sparsity['measured'] == pytest.approx(0.8, abs=0.01)
    assert max(per_layer) - min(per_layer) > 0.05  # not uniform: the allocation was global




CFG_HALF = [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.5}]






BAD_BAP = [('scale', 0), ('scale', -1.0), ('scale', math.nan), ('cutoff', -0.5), ('cutoff', 'mean'),
           ('cutoff', math.nan), ('cutoff', math.inf), ('attack_steps', 0), ('attack_steps', 2.5),
           ('candidates', 1), ('norm', 'l1'), ('overshoot', -0.1), ('clip_min', 1.0)]


BAD_ADV = [('eps', 0), ('eps', -0.1), ('eps', math.inf), ('steps', 0), ('alpha', 0.0),
           ('alpha', -0.01), ('clip_max', -1.0)]


@pytest.mark.parametrize('cls', [BAPPruner, AdversarialPruner])
def test_pruner_step_refuses_normalised_batch(cls, digits):
    """Issue 10 case 7 (inputs outside [clip_min, clip_max]): the pruners' training step refuses a normalised
    batch before crafting AEs, with the one-line message."""
    model = _net()
    x, y = _normalised(digits, 64)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    base = LevelPruner(model, CFG_HALF, evaluator=make_evaluator(model, loader, progress=False))
    pruner = cls(base, interval_steps=2, total_times=2, log_interval=0)
    with pytest.raises(ValueError, match=RANGE_MESSAGE):
        pruner.compress(max_steps=4, max_epochs=None)
    assert pruner.statistics == []


@pytest.mark.parametrize('cls, setting, value', [(BAPPruner, *s) for s in BAD_BAP] + [(AdversarialPruner, *s)
                                                                                      for s in BAD_ADV])
def test_pruners_refuse_bad_settings_at_construction(cls, setting, value, digits):
    """Issue 10 case 7 (settings validated at construction): scale=0, attack_steps=0, eps<=0, a bad cutoff / norm /
    candidates... raise ValueError naming the setting and value when the pruner is built."""
    model = _net()
    loader = DataLoader(TensorDataset(digits.x_train[:64], digits.y_train[:64]), batch_size=32)
    base = LevelPruner(model, CFG_HALF, evaluator=make_evaluator(model, loader, progress=False))
    name = 'clip_min must be below clip_max' if setting.startswith('clip') else setting
    with pytest.raises(ValueError, match=f'^{name}') as info:
        cls(base, interval_steps=2, total_times=2, log_interval=0, **{setting: value})
    assert repr(value) in str(info.value)


class _Indexed(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i], i


def test_pruner_warm_start_needs_and_uses_indices(dense_digits, digits):
    cfg = [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.5}]
    x, y = digits.x_train[:128], digits.y_train[:128]
    model = copy.deepcopy(dense_digits)
    plain = DataLoader(TensorDataset(x, y), batch_size=32)
    base = LevelPruner(model, cfg, evaluator=make_evaluator(model, plain, progress=False))
    with pytest.raises(TypeError, match=r'warm_start needs batches of \(inputs, labels, index\)'):
        BAPPruner(base, 1, 2, warm_start=True, log_interval=0).compress(max_steps=2, max_epochs=None)
    model = copy.deepcopy(dense_digits)
    loader = DataLoader(_Indexed(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    base = LevelPruner(model, cfg, evaluator=make_evaluator(model, loader, progress=False))
    pruner = BAPPruner(base, 2, 2, warm_start=True, log_interval=0)
    pruner.compress(max_steps=8, max_epochs=None)
    store = pruner.generator.warm.eta
    assert store.shape == (128, *x.shape[1:])
    moved = flat_norm(store, 'l2') > 0
    assert float(moved.float().mean()) > 0.8                   # every sample seen twice, most perturbed
    assert len(pruner.statistics) == 8


#: The README's Python API with a channel pruner, as a newcomer's script runs it (a fresh interpreter, no terminal).
README_SCRIPT = '''
import json, sys
import nni, torch
from nni_bap import AdversarialPruner, BAPPruner, finalize
from nni.compression.pruning import AGPPruner, L1NormPruner
from nni.compression.utils import TorchEvaluator
from torch.utils.data import DataLoader
from nni_bap.data import load_digits
from nni_bap.errors import BatchNormDriftError
from nni_bap.export import OnnxClassifier, export_onnx
from nni_bap.models import DigitsBN
from nni_bap.pruning.dependency import structured_dependency_config
from nni_bap.pruning.training import accuracy, train

data = load_digits()
torch.manual_seed(0)
dense = train(DigitsBN(), data.train_set(), epochs=4, progress=False)
loader = DataLoader(data.train_set(), batch_size=64, shuffle=True)

def training_func(model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
    model.train()
    step = 0
    while step < max_steps:
        for batch in loader:
            optimizers.zero_grad()
            training_step(batch, model).backward()
            optimizers.step()
            step += 1
            if step == max_steps:
                break

def training_step(batch, model):
    return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])

out = {}
for name in ('bap', 'adversarial', 'agp'):
    model = DigitsBN()
    model.load_state_dict(dense.state_dict())
    config_list = structured_dependency_config(model, [{'op_types': ['Conv2d'], 'sparse_ratio': 0.5}])
    evaluator = TorchEvaluator(training_func, nni.trace(torch.optim.Adam)(model.parameters(), lr=1e-3), training_step)
    pruner = L1NormPruner(model, config_list, evaluator=evaluator)
    scheduled = {'bap': lambda: BAPPruner(pruner, interval_steps=4, total_times=4, cutoff='adaptive', scale=1.0),
                 'adversarial': lambda: AdversarialPruner(pruner, interval_steps=4, total_times=4, eps=0.1),
                 'agp': lambda: AGPPruner(pruner, interval_steps=4, total_times=4)}[name]()
    _, masks = scheduled.compress(max_steps=24, max_epochs=None)
    model = finalize(scheduled)
    path = sys.argv[1] + f'/{name}.onnx'
    try:
        res = export_onnx(model, path, data.x_test[:8], masks=masks, validation_inputs=data.x_test)
    except BatchNormDriftError as exc:
        out[name] = {'refused': str(exc), 'bn_drift': exc.bn_drift}
        continue
    out[name] = {'bn_drift': res.bn_drift, 'flops': res.efficiency['flops'],
                 'torch': accuracy(model, data.x_test, data.y_test),
                 'onnx': OnnxClassifier(path).accuracy(data.x_test.numpy(), data.y_test.numpy())}
with open(sys.argv[1] + '/out.json', 'w') as fh:
    json.dump(out, fh)
'''


def test_readme_api_with_a_channel_pruner_exports_the_model_it_validated(tmp_path):
    """Issue 24: with L1NormPruner and BAPPruner as the README shows, the export had bn_drift 1.07 (AGP 1.47) and
    scored otherwise than the torch model; and the script printed NNI's speed-up lines. Now BAPPruner and
    AdversarialPruner mask BatchNorm with the channel masks (bn_drift 0, ONNX accuracy == torch accuracy), NNI's
    AGPPruner without the masks is refused at export, and the script's stdout and stderr stay empty."""
    import json
    import os
    import subprocess
    import sys
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run([sys.executable, '-c', README_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == '' and proc.stderr == ''
    out = json.loads((tmp_path / 'out.json').read_text())
    for name in ('bap', 'adversarial'):
        assert out[name]['bn_drift'] == 0.0, name
        assert out[name]['onnx'] == pytest.approx(out[name]['torch'], abs=1e-6) and out[name]['torch'] > 0.5, name
        assert out[name]['flops'] < 0.4 * 1199360, name  # every conv's channels halved, the second's input too
    assert out['agp']['bn_drift'] > 1e-3 and 'install_channel_masks' in out['agp']['refused']


def test_progress_bar_over_pruning_steps(dense_digits, digits, capsys):
    """Issue 24: a script saw no sign of progress during a long prune. The bar shows on stderr when asked (by default
    when stderr is a terminal, which pytest's is not), and not with progress=False."""
    def run(**kwargs):
        model = copy.deepcopy(dense_digits)
        base = LevelPruner(model, CFG, evaluator=make_evaluator(model, _loader(digits), progress=False))
        BAPPruner(base, interval_steps=2, total_times=2, log_interval=0, **kwargs).compress(max_steps=20,
                                                                                           max_epochs=None)
        return capsys.readouterr()
    shown = run(progress=True)
    assert shown.out == '' and 'BAPPruner' in shown.err and '20/20' in shown.err and 'ae_error=' in shown.err
    assert run(progress=False) == ('', '')
    assert run() == ('', '')  # not a terminal
