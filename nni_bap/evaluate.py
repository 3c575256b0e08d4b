"""Robustness evaluation: accuracy-vs-budget curves, their areas, and sanity checks.

Protocol (the paper's, plus today's practice):

- ``deepfool``: DeepFool-L2 with many iterations; its perturbations are *cut* to each budget of
  the grid and re-classified (the paper's curve). L2 budgets are given in RMS-per-element units
  (see :mod:`nni_bap.cutoff`); 0.2 RMS is L2 5.6 on 28x28.
- ``fgsm``, ``pgd`` (Linf, random start, >= 20 steps) and ``pgd_l2`` (budgets in RMS units).
- a sample counts as robust at budget b only if it resists every budget <= b of that attack
  (an adversarial example inside a smaller ball is inside the larger one), so curves are
  non-increasing by construction; the raw per-budget accuracies are kept for the sanity checks.
- ``worst_linf``: per sample, the worst case over the Linf attacks at each Linf budget.
- AUC: trapezoidal area under the curve over the budget range, divided by the range, with the
  clean accuracy at budget 0.

Every adversarial batch can also be re-classified by extra classifiers (for instance an
onnxruntime session), reported side by side.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .attacks import ATTACKS, DeepFool, flat_norm
from .cutoff import cutoff_scale, rms_to_l2

__all__ = ['DEFAULT_SPEC', 'auc', 'evaluate_robustness', 'sanity_checks']

_logger = logging.getLogger(__name__)

Classifier = Callable[[np.ndarray], np.ndarray]

#: Default evaluation: attack name -> (budget grid, settings). L2 grids are in RMS units.
DEFAULT_SPEC: Dict[str, Dict] = {
    'deepfool': {'budgets': [0.0, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2], 'steps': 100},
    'fgsm': {'budgets': [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]},
    'pgd': {'budgets': [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3], 'steps': 20},
    'pgd_l2': {'budgets': [0.0, 0.025, 0.05, 0.1, 0.15, 0.2], 'steps': 20},
}
_LINF = ('fgsm', 'pgd')


def auc(budgets: Sequence[float], accuracies: Sequence[float]) -> float:
    """Area under an accuracy-vs-budget curve (trapezoids), normalised by the budget range."""
    b, a = np.asarray(budgets, dtype=float), np.asarray(accuracies, dtype=float)
    if len(b) < 2 or b[-1] == b[0]:
        return float(a[0]) if len(a) else float('nan')
    return float(np.sum((a[1:] + a[:-1]) / 2 * np.diff(b)) / (b[-1] - b[0]))


def _torch_classifier(model: nn.Module, batch_size: int) -> Classifier:
    def classify(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = torch.from_numpy(x)
            return torch.cat([model(t[i:i + batch_size]).argmax(1) for i in range(0, len(t), batch_size)]).numpy()
    return classify


def _batched(fn, x: Tensor, y: Tensor, batch_size: int) -> Tensor:
    return torch.cat([fn(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def evaluate_robustness(model: nn.Module, x: Tensor, y: Tensor, spec: Optional[Dict[str, Dict]] = None,
                        classifiers: Optional[Dict[str, Classifier]] = None, batch_size: int = 500,
                        seed: int = 0, progress: bool = True, huge_eps: float = 1.0) -> Dict:
    """Evaluate ``model`` on ``(x, y)`` under every attack of ``spec``.

    Parameters
    ----------
    model
        Plain torch model (masks baked in); put in eval mode for the whole evaluation.
    x, y
        Test inputs in [0, 1] and labels.
    spec
        Attack name -> ``{'budgets': [...], ...attack settings}``; :data:`DEFAULT_SPEC` by default.
    classifiers
        Extra ``name -> f(numpy inputs) -> labels`` that re-classify every adversarial batch
        (e.g. an onnxruntime session); ``'torch'`` is always included.
    huge_eps
        Linf budget of the "robust accuracy near zero" sanity check.

    Returns
    -------
    dict
        ``clean_accuracy``, ``median_deepfool_l2``, ``curves`` (per attack: ``budgets``, ``unit``,
        ``accuracy`` and ``raw_accuracy`` per classifier, ``auc`` per classifier),
        ``worst_linf``, ``robust_auc`` (torch), ``huge_eps_accuracy`` and ``warnings``.
    """
    spec = spec if spec is not None else DEFAULT_SPEC
    model.eval()
    torch.manual_seed(seed)
    clfs = {'torch': _torch_classifier(model, batch_size)}
    clfs.update(classifiers or {})
    shape = tuple(x.shape[1:])
    yn = y.numpy()
    clean = {name: float((f(x.numpy()) == yn).mean()) for name, f in clfs.items()}
    report: Dict = {'samples': int(len(y)), 'clean_accuracy': clean['torch'], 'clean_accuracy_by': clean,
                    'curves': {}, 'robust_auc': {}}
    total = sum(len(s['budgets']) for s in spec.values())
    bar = tqdm(total=total, desc='evaluate', disable=not progress, leave=False)
    correct_by_linf: Dict[str, Dict[float, np.ndarray]] = {}
    for name, settings in spec.items():
        settings = dict(settings)
        budgets = [float(b) for b in settings.pop('budgets')]
        unit = 'linf' if name in _LINF else 'rms'
        raw = {c: [] for c in clfs}
        running = {c: np.ones(len(yn), dtype=bool) for c in clfs}
        acc = {c: [] for c in clfs}
        eta = None
        if name == 'deepfool':
            df = DeepFool(model, norm='l2', **settings)
            eta = _batched(lambda a, b: df.attack(a, b).eta, x, y, batch_size)
            report['median_deepfool_l2'] = float(flat_norm(eta, 'l2').median())
        for b in budgets:
            if b == 0:
                x_adv = x
            elif name == 'deepfool':
                cut, _ = cutoff_scale(eta, cutoff=rms_to_l2(b, shape), scale=1.0, norm='l2')
                x_adv = (x + cut).clamp(0.0, 1.0)
            else:
                eps = b if unit == 'linf' else rms_to_l2(b, shape)
                atk = ATTACKS[name](model, eps=eps, **settings)
                x_adv = _batched(atk, x, y, batch_size)
            xa = x_adv.numpy()
            for c, f in clfs.items():
                ok = f(xa) == yn
                raw[c].append(float(ok.mean()))
                running[c] &= ok
                acc[c].append(float(running[c].mean()))
                if unit == 'linf':
                    correct_by_linf.setdefault(c, {}).setdefault(b, np.ones(len(yn), dtype=bool))
                    correct_by_linf[c][b] &= running[c]
            bar.update(1)
        report['curves'][name] = {'budgets': budgets, 'unit': unit, 'accuracy': acc, 'raw_accuracy': raw,
                                  'auc': {c: auc(budgets, acc[c]) for c in clfs}}
        report['robust_auc'][name] = auc(budgets, acc['torch'])
    bar.close()
    if correct_by_linf:
        bs = sorted(correct_by_linf['torch'])
        worst = {c: [float(correct_by_linf[c][b].mean()) for b in bs] for c in clfs}
        report['worst_linf'] = {'budgets': bs, 'accuracy': worst, 'auc': {c: auc(bs, worst[c]) for c in clfs}}
        report['robust_auc']['worst_linf'] = auc(bs, worst['torch'])
    if huge_eps:
        atk = ATTACKS['pgd'](model, eps=huge_eps, steps=10)
        report['huge_eps_accuracy'] = float((clfs['torch'](_batched(atk, x, y, batch_size).numpy()) == yn).mean())
    report['warnings'] = sanity_checks(report)
    for w in report['warnings']:
        _logger.warning('suspicious evaluation: %s', w)
    return report


def sanity_checks(report: Dict, tolerance: float = 0.02) -> List[str]:
    """Flags of a suspicious evaluation (gradient masking, broken attacks)."""
    warnings: List[str] = []
    curves = report.get('curves', {})
    for name, c in curves.items():
        raw = c['raw_accuracy']['torch']
        for (b0, a0), (b1, a1) in zip(zip(c['budgets'], raw), zip(c['budgets'][1:], raw[1:])):
            if a1 > a0 + tolerance:
                warnings.append(f'{name}: accuracy rises from {a0:.3f} at {b0:g} to {a1:.3f} at {b1:g}')
    if 'fgsm' in curves and 'pgd' in curves:
        f, p = curves['fgsm'], curves['pgd']
        for b in sorted(set(f['budgets']) & set(p['budgets'])):
            fa = f['raw_accuracy']['torch'][f['budgets'].index(b)]
            pa = p['raw_accuracy']['torch'][p['budgets'].index(b)]
            if pa > fa + tolerance:
                warnings.append(f'PGD weaker than FGSM at eps {b:g} ({pa:.3f} > {fa:.3f})')
    huge = report.get('huge_eps_accuracy')
    if huge is not None and huge > 0.1:
        warnings.append(f'robust accuracy {huge:.3f} at a huge Linf budget: attacks may be masked')
    return warnings
