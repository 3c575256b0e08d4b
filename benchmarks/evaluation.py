"""The worst-case evaluation's cost against today's default (issue 11), and our APGD against IBM ART's."""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch

from nni_bap.attacks import APGD, FGSM, PGD, PGDL2, DeepFool
from nni_bap.evaluation.robustness import evaluate_robustness
from nni_bap.evaluation.spec import named_spec
from nni_bap.pruning.cutoff import cutoff_scale, rms_to_l2
from nni_bap.pruning.prune import prune
from nni_bap.pruning.training import accuracy

from .common import info, line, paired

CFG = [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.9}]
#: The evaluation that was the default before the worst case: DeepFool-100 over all classes cut to an RMS grid,
#: FGSM and PGD-20 on a Linf grid, PGD-L2-20 on an RMS grid, every attack on every sample, plus PGD-10 at Linf 1.
LEGACY = {'deepfool': [0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2], 'fgsm': [0.05, 0.1, 0.15, 0.2, 0.25, 0.3],
          'pgd': [0.05, 0.1, 0.15, 0.2, 0.25, 0.3], 'pgd_l2': [0.025, 0.05, 0.1, 0.15, 0.2]}


def _batched(fn, x, y, bs=500):
    return torch.cat([fn(x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)])


def legacy_evaluation(model, x, y) -> Dict[str, float]:
    """Today's default evaluation, reproduced for timing; returns its accuracies at Linf 0.1 and L2 1.5."""
    shape, out = tuple(x.shape[1:]), {}
    df = DeepFool(model, steps=100)
    eta = _batched(lambda a, b: df.attack(a, b).eta, x, y)
    for b in LEGACY['deepfool']:
        cut, _ = cutoff_scale(eta, cutoff=rms_to_l2(b, shape), norm='l2')
        accuracy(model, (x + cut).clamp(0, 1), y)
    for name, cls in (('fgsm', FGSM), ('pgd', PGD), ('pgd_l2', PGDL2)):
        for b in LEGACY[name]:
            eps = b if name != 'pgd_l2' else rms_to_l2(b, shape)
            kw = {} if name == 'fgsm' else {'steps': 20}
            out[f'{name}@{b:g}'] = accuracy(model, _batched(cls(model, eps=eps, **kw), x, y), y)
    accuracy(model, _batched(PGD(model, eps=1.0, steps=10), x, y), y)
    cut, _ = cutoff_scale(eta, cutoff=1.5, norm='l2')
    out['deepfool-cut@l2 1.5'] = accuracy(model, (x + cut).clamp(0, 1), y)
    out['pgd_l2@l2 1.5'] = accuracy(model, _batched(PGDL2(model, eps=1.5, steps=20), x, y), y)
    return out


def _bap_lenet(model, data) -> torch.nn.Module:
    ds = torch.utils.data.TensorDataset(data.x_train[:4000], data.y_train[:4000])
    return prune(model, ds, CFG, method='bap', epochs=2, total_times=5, progress=False, seed=0).model.eval()


def _cost_lines(model, x, y) -> List[Dict]:
    res = {}

    def run(kind, fn):
        torch.manual_seed(0)
        res[kind] = fn()
    t_new, t_old = paired(lambda: run('new', lambda: evaluate_robustness(model, x, y, progress=False)),
                          lambda: run('old', lambda: legacy_evaluation(model, x, y)), reps=2, warmup=0)
    kp = {(k['norm'], k['budget']): k for k in res['new']['key_points']}
    out = [line('eval_worst_case_vs_old_default_wall', t_new / t_old, t_new, t_old, '<= 1.0', t_new <= t_old)]
    for key, old in (('linf', 0.1), ('l2', 1.5)):
        k = kp[(key, old)]
        olds = ', '.join(f'{n} {v:.4f}' for n, v in res['old'].items()
                         if n.endswith(f'@{key} {old:g}') or (key == 'linf' and n in (f'fgsm@{old:g}', f'pgd@{old:g}')))
        out.append(info(f'BAP LeNet-5 at 0.9, {len(y)} images, {key} {old:g}: worst case {k["accuracy"]:.4f} '
                        f'[{k["interval"][0]:.4f}, {k["interval"][1]:.4f}]; old single attacks: {olds}'))
    return out


def _art_line(model, x, y, steps: int = 50) -> List[Dict]:
    try:
        from art.attacks.evasion import AutoProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        return [info('IBM ART not installed (pip install adversarial-robustness-toolbox==1.20.1): no ART line')]
    clf = PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
                            clip_values=(0.0, 1.0))
    art = AutoProjectedGradientDescent(clf, norm=np.inf, eps=0.1, eps_step=0.2, max_iter=steps, nb_random_init=1,
                                       batch_size=len(x), loss_type='cross_entropy', verbose=False)
    ours = APGD(model, eps=0.1, steps=steps)
    accs = {}

    def run_art():
        accs['art'] = float((clf.predict(art.generate(x.numpy())).argmax(1) == y.numpy()).mean())

    def run_ours():
        accs['ours'] = accuracy(model, ours(x, y), y)
    t_art, t_ours = paired(run_art, run_ours, reps=3, warmup=1)
    return [line('apgd_vs_ibm_art_speedup', t_art / t_ours, t_art, t_ours, '>= 5', t_art / t_ours >= 5),
            info(f'APGD-CE Linf 0.1, {steps} iterations, {len(y)} images: robust accuracy ours {accs["ours"]:.4f}, '
                 f'ART {accs["art"]:.4f}; both batch the whole set, so the cost is the same forward and backward '
                 'passes and ART adds only its numpy conversions')]


def _coverage_lines(model, x, y) -> List[Dict]:
    """Issue 23: the default spec (APGD-CE/DLR at every budget) against the key-points-only spec, side by side."""
    shape, res = tuple(x.shape[1:]), {}

    def run(kind):
        torch.manual_seed(0)
        res[kind] = evaluate_robustness(model, x, y, named_spec(kind, shape), progress=False)
    t_every, t_keys = paired(lambda: run('worst-case'), lambda: run('key-points'), reps=1, warmup=0)
    out = [line('eval_every_budget_vs_key_points_wall', t_every / t_keys, t_every, t_keys, '<= 2.0',
                t_every / t_keys <= 2.0)]
    for norm in res['worst-case']['curves']:
        every, keys = (res[k]['curves'][norm] for k in ('worst-case', 'key-points'))
        gaps = [a - b for a, b in zip(keys['accuracy']['torch'], every['accuracy']['torch'])]
        worst = max(range(len(gaps)), key=lambda i: gaps[i])
        out.append(info(f'{norm}: the key-points spec overstated robust accuracy by up to {gaps[worst]:.4f} (at '
                        f'{every["budgets"][worst]:g}), its AUC by {keys["auc"]["torch"] - every["auc"]["torch"]:.4f} '
                        f'({len(y)} images)'))
    for norm, log in res['worst-case']['cascade'].items():
        ran = sum(s['ran_on'] for s in log if s['budget'])
        out.append(info(f'{norm}: fixed-budget attacks ran on {ran} (sample, budget) pairs at every budget vs '
                        f'{sum(s["ran_on"] for s in res["key-points"]["cascade"][norm] if s["budget"])} at the key '
                        'points'))
    return out


def run(model, data) -> List[Dict]:
    bap = _bap_lenet(model, data)
    x, y = data.x_test[:2000], data.y_test[:2000]
    return _cost_lines(bap, x, y) + _coverage_lines(bap, x, y) + _art_line(bap, x[:200], y[:200])
