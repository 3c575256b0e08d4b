"""Robustness evaluation: per norm, the per-sample worst case over strong attacks, with key points and intervals.

Protocol (see :mod:`nni_bap.evaluation.spec` for the spec and :mod:`nni_bap.evaluation.cascade` for the worst case):

- per norm (``linf``, ``l2``; budgets are plain per-example norms), minimum-norm attacks (FMN, DeepFool)
  run first on every correctly classified sample; then fixed-budget attacks (APGD-CE, APGD-DLR, ...)
  run at the key points on the samples still robust there, as in AutoAttack;
- ``robust_auc[norm]`` is the area under the worst-case curve over the budget grid, divided by the
  budget range (clean accuracy at budget 0); ``key_points`` give the worst-case accuracy at named budgets
  with n and a 95% Wilson interval;
- per-attack curves of the minimum-norm attacks and the paper's DeepFool curve (perturbations cut to each
  budget) stay in the report (``curves_by_attack``, ``robust_auc_by_attack``); DeepFool is never a
  robustness number on its own;
- every adversarial input is also re-classified by extra classifiers (e.g. onnxruntime), side by side.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..attacks import PGD
from ..utils.device import model_device
from .cascade import Cascade
from .intervals import wilson
from .spec import NormSpec, default_spec, validate_spec

__all__ = ['auc', 'evaluate_robustness', 'key_point', 'sanity_checks']

_logger = logging.getLogger(__name__)

Classifier = Callable[[np.ndarray], np.ndarray]
#: How much the DeepFool-cut curve may exceed the worst case at a key point before it is flagged.
DEEPFOOL_GAP = 0.05
#: Share of correctly classified samples an unbounded minimum-norm attack must fool.
MIN_NORM_SUCCESS = 0.98
#: Samples the huge-budget masking check attacks.
HUGE_EPS_SAMPLES = 500


def auc(budgets: Sequence[float], accuracies: Sequence[float]) -> float:
    """Area under an accuracy-vs-budget curve (trapezoids), normalised by the budget range."""
    b, a = np.asarray(budgets, dtype=float), np.asarray(accuracies, dtype=float)
    if len(b) < 2 or b[-1] == b[0]:
        return float(a[0]) if len(a) else float('nan')
    return float(np.sum((a[1:] + a[:-1]) / 2 * np.diff(b)) / (b[-1] - b[0]))


def key_point(norm: str, budget: float, robust: np.ndarray) -> Dict:
    """Accuracy at one budget with its n and 95% Wilson interval."""
    k, n = int(robust.sum()), int(robust.size)
    return {'norm': norm, 'budget': float(budget), 'accuracy': k / n if n else float('nan'), 'n': n,
            'interval': list(wilson(k, n))}


def _torch_classifier(model: nn.Module, batch_size: int) -> Classifier:
    def classify(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = torch.from_numpy(x).to(model_device(model))
            labels = [model(t[i:i + batch_size]).argmax(1) for i in range(0, len(t), batch_size)]
            return torch.cat(labels).cpu().numpy()
    return classify


def _min_norm_attacks(model: nn.Module, casc: Cascade, norm_spec: NormSpec, budgets: List[float], out: Dict) -> None:
    for name, settings in norm_spec.min_norm_attacks():
        own = casc.min_norm(norm_spec.build(name, settings, model))
        out['curves_by_attack'][f'{casc.norm}/{name}'] = [float((own > b).mean()) for b in budgets]
        if name == 'deepfool':
            norms = torch.linalg.vector_norm(casc.eta.flatten(1), ord=2 if casc.norm == 'l2' else float('inf'), dim=1)
            out[f'median_deepfool_{casc.norm}'] = float(norms.median())
            out['curves_by_attack'][f'{casc.norm}/deepfool-cut'] = casc.cut(casc.eta, budgets)


def _fixed_attacks(model: nn.Module, casc: Cascade, norm_spec: NormSpec, cascade: bool) -> None:
    for budget in norm_spec.fixed_budgets:
        for name, settings in norm_spec.fixed_attacks():
            if budget == 0:
                continue
            casc.fixed(norm_spec.build(name, settings, model, budget), budget, cascade)


def _evaluate_norm(model: nn.Module, casc: Cascade, norm_spec: NormSpec, cascade: bool, report: Dict) -> None:
    norm = casc.norm
    budgets = norm_spec.grid
    _min_norm_attacks(model, casc, norm_spec, budgets, report)
    _fixed_attacks(model, casc, norm_spec, cascade)
    acc = {c: [float(casc.robust(b, c).mean()) for b in budgets] for c in casc.broken}
    report['curves'][norm] = {'budgets': budgets, 'unit': norm, 'accuracy': acc,
                              'auc': {c: auc(budgets, a) for c, a in acc.items()}}
    report['robust_auc'][norm] = report['curves'][norm]['auc']['torch']
    report['key_points'] += [key_point(norm, b, casc.robust(b)) for b in norm_spec.key_points]
    report['cascade'][norm] = casc.log


def evaluate_robustness(model: nn.Module, x: Tensor, y: Tensor, spec: Optional[Dict] = None,
                        classifiers: Optional[Dict[str, Classifier]] = None, batch_size: int = 500,
                        seed: int = 0, progress: bool = True, huge_eps: float = 1.0, cascade: bool = True) -> Dict:
    """Evaluate ``model`` on ``(x, y)``: per norm of ``spec``, the worst case over its attacks.

    Parameters
    ----------
    model
        Plain torch model (masks baked in); put in eval mode for the whole evaluation.
    x, y
        Test inputs in [0, 1] and labels.
    spec
        See :mod:`nni_bap.evaluation.spec`; :func:`~nni_bap.evaluation.spec.default_spec` for ``x``'s shape by default.
    classifiers
        Extra ``name -> f(numpy inputs) -> labels`` that re-classify every adversarial input
        (e.g. an onnxruntime session); ``'torch'`` is always included.
    huge_eps
        Linf budget of the "robust accuracy near zero" sanity check (0: skipped).
    cascade
        Attack only the samples still robust (``False``: every correctly classified sample; same result).

    Returns
    -------
    dict
        ``samples``, ``clean_accuracy`` (+ ``clean_interval``, ``clean_accuracy_by``), ``curves`` (per norm:
        ``budgets``, ``unit``, worst-case ``accuracy`` and ``auc`` per classifier), ``robust_auc`` (per norm,
        torch), ``key_points``, ``curves_by_attack`` and ``robust_auc_by_attack``, ``cascade`` (what each
        attack ran on), ``median_deepfool_<norm>``, ``huge_eps_accuracy``, ``warnings``.
    """
    spec = validate_spec(spec if spec is not None else default_spec(tuple(x.shape[1:])))
    model.eval()
    torch.manual_seed(seed)
    clfs = {'torch': _torch_classifier(model, batch_size), **(classifiers or {})}
    yn = y.cpu().numpy()
    clean = {c: float((f(x.cpu().numpy()) == yn).mean()) for c, f in clfs.items()}
    report: Dict = {'samples': int(len(y)), 'coverage': spec.coverage, 'clean_accuracy': clean['torch'],
                    'clean_accuracy_by': clean,
                    'clean_interval': list(wilson(int(round(clean['torch'] * len(y))), len(y))),
                    'curves': {}, 'robust_auc': {}, 'key_points': [], 'curves_by_attack': {}, 'cascade': {}}
    for norm_spec in tqdm(spec, desc='evaluate', disable=not progress, leave=False):
        _evaluate_norm(model, Cascade(model, x, y, norm_spec.norm, clfs, batch_size), norm_spec, cascade, report)
    report['robust_auc_by_attack'] = {k: auc(report['curves'][k.split('/')[0]]['budgets'], v)
                                      for k, v in report['curves_by_attack'].items()}
    if huge_eps:
        adv = PGD(model, eps=huge_eps, steps=10)(x[:HUGE_EPS_SAMPLES], y[:HUGE_EPS_SAMPLES])
        report['huge_eps_accuracy'] = float((clfs['torch'](adv.cpu().numpy()) == yn[:HUGE_EPS_SAMPLES]).mean())
    report['warnings'] = sanity_checks(report)
    for w in report['warnings']:
        _logger.warning('suspicious evaluation: %s', w)
    return report


def _above_an_attack(report: Dict) -> List[str]:
    """Budgets where the worst case exceeds one attack's own accuracy: impossible by construction (a bug if it
    happens), since every adversarial input an attack finds enters the worst case."""
    out = []
    for norm, c in report.get('curves', {}).items():
        if 'torch' not in c.get('accuracy', {}):
            continue
        worst = dict(zip(c['budgets'], c['accuracy']['torch']))
        own = [(key.split('/')[1], dict(zip(c['budgets'], acc)))
               for key, acc in report.get('curves_by_attack', {}).items() if key.startswith(f'{norm}/')]
        own += [(s['attack'], {s['budget']: s['accuracy_after']}) for s in report.get('cascade', {}).get(norm, [])
                if s.get('budget') is not None]
        out += [f'worst case {worst[b]:.4f} above {name}\'s own accuracy {a:.4f} at {norm} {b:g}: the cascade lost '
                'an adversarial input' for name, accs in own for b, a in accs.items() if b in worst and worst[b] > a + 1e-9]
    return out


def sanity_checks(report: Dict) -> List[str]:
    """Flags of a suspicious evaluation: a minimum-norm attack that fails unbounded, attack-specific robustness
    (the DeepFool-cut curve above the worst case at a key point), robustness at a huge budget (masking), and a
    worst case above some attack's own accuracy (impossible by construction)."""
    warnings: List[str] = _above_an_attack(report)
    for norm, log in report.get('cascade', {}).items():
        for step in log:
            if step.get('found') is not None and step['found'] < MIN_NORM_SUCCESS:
                warnings.append(f'{step["attack"]} ({norm}) found adversarial inputs for only {step["found"]:.3f} '
                                'of correctly classified samples: unbounded it should find nearly all')
    for kp in report.get('key_points', []):
        cut = report.get('curves_by_attack', {}).get(f'{kp["norm"]}/deepfool-cut')
        if cut is not None:
            df = cut[report['curves'][kp['norm']]['budgets'].index(kp['budget'])]
            if df > kp['accuracy'] + DEEPFOOL_GAP:
                warnings.append(f'DeepFool cut to {kp["norm"]} {kp["budget"]:g} gives {df:.3f}, the worst case '
                                f'{kp["accuracy"]:.3f}: DeepFool alone overstates robustness here')
    huge = report.get('huge_eps_accuracy')
    if huge is not None and huge > 0.1:
        warnings.append(f'robust accuracy {huge:.3f} at a huge Linf budget: attacks may be masked')
    return warnings
