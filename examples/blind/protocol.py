"""Issue 20's protocol, fixed before any selection run: data splits, evaluation, criteria and statistics.

*Blind budgets that win*: a cutoff-scale pruner (a BAPPruner setting) that beats uniform-budget adversarial
pruning under the worst-case attack, on both norms, at FGSM-RS cost. Pure functions of ``aer.json``-style rows
(``method``, ``process``, ``seed``, ``sparsity``, ``clean_accuracy``, ``robust_auc``), so the criteria can be
read and tested apart from the runs (:mod:`examples.reproduce.claims` gives ``A``, the paired bootstrap and the
verdicts).

Data (MNIST t10k, the only MNIST here): images 0-5999 train every model, 6000-7999 are the validation set
(selection only), 8000-9999 the test set (confirmation only). The three ranges are disjoint
(:func:`check_splits`) and the selection stage refuses data holding any image outside 0-7999
(:func:`assert_no_test_images`).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from nni_bap.evaluation.spec import default_spec, validate_spec

from ..reproduce.claims import aer_score, bootstrap_mean, verdict

__all__ = ['BASELINE_FGSM', 'BASELINE_PGD', 'CONFIRMATION', 'CRITERIA', 'COST_GOAL', 'SELECTION', 'SPLITS',
           'STRETCH_COST', 'assert_no_test_images', 'check_splits', 'confirm', 'eval_spec', 'select',
           'split_indices', 'validation_table']

#: Image index ranges [start, stop) of MNIST t10k.
SPLITS: Dict[str, Tuple[int, int]] = {'train': (0, 6000), 'validation': (6000, 8000), 'test': (8000, 10000)}
#: Uniform-budget baselines, tuned alike: the FGSM-RS budget is chosen by validation A; PGD-10 runs at 0.1.
BASELINE_FGSM = ('adversarial-fgsm0.1', 'adversarial-fgsm0.2', 'adversarial-fgsm0.3')
BASELINE_PGD = 'adversarial-pgd0.1'
#: A variant is eligible only if its training step costs at most this many FGSM-RS steps (the benchmark).
COST_GOAL = 1.5
#: The stretch goal's cost: at most this fraction of a PGD-10 step.
STRETCH_COST = 1 / 3
#: The selection grid: validation images, seeds 0-2, both sparsities, the AGP process.
SELECTION = {'split': 'validation', 'images': 2000, 'seeds': [0, 1, 2], 'sparsities': [0.8, 0.95],
             'processes': ['agp@0.667']}
#: The confirmation grid: test images, fresh seeds 3-7, two processes, both sparsities.
CONFIRMATION = {'split': 'test', 'images': 2000, 'seeds': [3, 4, 5, 6, 7], 'sparsities': [0.8, 0.95],
                'processes': ['agp@0.667', 'linear@0.667']}

CRITERIA = {
    'selection': ('Selection on the validation images (6000-7999), seeds 0-2, sparsities 0.8 and 0.95, AGP process: '
                  'every BAP variant and the baselines are tuned alike. A = (clean + worst-case Linf AUC + '
                  'worst-case L2 AUC) / 3. The selected variant has the highest mean validation A over the '
                  '(seed, sparsity) cells among the BAP variants whose training step costs at most 1.5 FGSM-RS '
                  'steps in the benchmark (benchmarks/blind_budgets_step.py); the selected FGSM-RS budget is the '
                  'one of 0.1, 0.2, 0.3 with the highest mean validation A; PGD-10 runs at 0.1. A method counts '
                  'only with every cell finished. Test images are never read.'),
    'goal': ('Confirmation on the test images (8000-9999), fresh seeds 3-7, processes AGP and linear, sparsities '
             '0.8 and 0.95; unit = (process, seed, sparsity), 20 units; paired differences selected variant minus '
             'baseline, percentile bootstrap 95% intervals (10,000 resamples). Goal: the selected variant '
             'dominates the selected FGSM-RS: the A difference interval lies above 0, neither the Linf AUC nor '
             'the L2 AUC difference interval lies below 0, and its step costs at most 1.5 FGSM-RS steps.'),
    'stretch': ('Stretch: the same three interval conditions against PGD-10 (eps 0.1), at most a third of a '
                'PGD-10 step.'),
}


def check_splits(splits: Mapping[str, Tuple[int, int]] = SPLITS) -> None:
    """``AssertionError`` unless the index ranges are well formed and pairwise disjoint."""
    ranges = sorted(splits.values())
    assert all(0 <= a < b for a, b in ranges), f'malformed ranges {splits}'
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(ranges, ranges[1:])), f'overlapping ranges {splits}'


def split_indices(split: str, images: Optional[int] = None) -> Tuple[int, int]:
    """The index range [start, stop) of the first ``images`` images of ``split`` (all by default)."""
    check_splits()
    start, stop = SPLITS[split]
    if images is not None:
        assert 0 < images <= stop - start, f'{split} holds {stop - start} images, asked for {images}'
        stop = start + images
    return start, stop


def assert_no_test_images(meta: Mapping) -> None:
    """``AssertionError`` unless every image index a stage's data holds (``meta['indices']``: one (start, stop)
    range per part) lies below the test split's start."""
    first_test = SPLITS['test'][0]
    parts = meta.get('indices')
    assert parts, 'the data do not record which images they hold'
    for name, (start, stop) in parts.items():
        assert stop <= first_test, f'{name} holds test images {max(start, first_test)}-{stop - 1}'


def eval_spec(input_shape=(1, 28, 28)) -> Dict:
    """The library's worst-case spec (:func:`nni_bap.evaluation.spec.default_spec`), asserted to run its
    fixed-budget attacks (APGD-CE/DLR) at every budget of each norm's grid, not only at the key points."""
    spec = default_spec(tuple(input_shape))
    assert validate_spec(spec).coverage == 'every budget', 'the worst case must run APGD at every budget'
    return spec


def _auc(row: Dict, norm: str) -> float:
    return float(row['robust_auc'][norm])


def _cells(rows: Sequence[Dict], method: str, grid: Mapping) -> Dict[Tuple, Dict]:
    want = {(p, s, float(sp)) for p in grid['processes'] for s in grid['seeds'] for sp in grid['sparsities']}
    return {(r['process'], int(r['seed']), float(r['sparsity'])): r for r in rows
            if r['method'] == method and (r['process'], int(r['seed']), float(r['sparsity'])) in want}


def _complete(rows: Sequence[Dict], method: str, grid: Mapping) -> bool:
    return len(_cells(rows, method, grid)) == len(grid['processes']) * len(grid['seeds']) * len(grid['sparsities'])


def validation_table(rows: Sequence[Dict], methods: Sequence[str], grid: Mapping = SELECTION,
                     ratios: Optional[Mapping[str, float]] = None) -> List[Dict]:
    """Per method: cells finished, mean A, clean, Linf AUC, L2 AUC over the grid's cells, and the step-cost ratio."""
    out = []
    for m in methods:
        cells = list(_cells(rows, m, grid).values())
        mean = (lambda f: float(np.mean([f(r) for r in cells])) if cells else float('nan'))
        out.append({'method': m, 'cells': len(cells), 'complete': _complete(rows, m, grid), 'A': mean(aer_score),
                    'clean': mean(lambda r: r['clean_accuracy']), 'linf_auc': mean(lambda r: _auc(r, 'linf')),
                    'l2_auc': mean(lambda r: _auc(r, 'l2')),
                    'step_ratio': None if ratios is None else ratios.get(m)})
    return out


def select(rows: Sequence[Dict], variants: Sequence[str], ratios: Mapping[str, float],
           grid: Mapping = SELECTION) -> Dict:
    """The selection of :data:`CRITERIA` ``['selection']`` on validation rows.

    Returns ``{'variant', 'fgsm', 'pgd', 'table', 'eligible', 'missing'}``; ``variant`` / ``fgsm`` are ``None``
    while a candidate's cells are missing (a selection is made only on complete grids). PGD-10's validation row
    is information only (it has no budget to choose), so its cells are not waited for.
    """
    table = validation_table(rows, list(variants) + list(BASELINE_FGSM) + [BASELINE_PGD], grid, ratios)
    by = {t['method']: t for t in table}
    missing = [t['method'] for t in table if not t['complete'] and t['method'] != BASELINE_PGD]  # PGD: no choice
    unmeasured = [v for v in variants if v not in ratios]
    assert not unmeasured, f'no benchmark step cost for {unmeasured}: run benchmarks/blind_budgets_step.py'
    eligible = [v for v in variants if ratios[v] <= COST_GOAL]
    ready = not missing
    variant = max(eligible, key=lambda v: by[v]['A']) if ready and eligible else None
    fgsm = max(BASELINE_FGSM, key=lambda m: by[m]['A']) if ready else None
    return {'variant': variant, 'fgsm': fgsm, 'pgd': BASELINE_PGD, 'table': table, 'eligible': eligible,
            'missing': missing}


def _diffs(rows: Sequence[Dict], a: str, b: str, grid: Mapping, f) -> List[Tuple[int, float]]:
    ca, cb = _cells(rows, a, grid), _cells(rows, b, grid)
    return [(key[1], f(ca[key]) - f(cb[key])) for key in sorted(ca) if key in cb]


def _stat(name: str, units: List[Tuple[int, float]], expected: int) -> Dict:
    mean, low, high = bootstrap_mean([d for _, d in units])
    return {'name': name, 'n': len(units), 'expected': expected, 'seeds': len({s for s, _ in units}),
            'mean': mean, 'interval': [low, high], 'verdict': verdict(low, high) if units else 'inconclusive'}


def compare(rows: Sequence[Dict], variant: str, baseline: str, grid: Mapping = CONFIRMATION) -> List[Dict]:
    """Paired statistics of ``variant - baseline``: A, Linf AUC, L2 AUC, clean (unit = (process, seed, sparsity))."""
    expected = len(grid['processes']) * len(grid['seeds']) * len(grid['sparsities'])
    fs = {'A': aer_score, 'linf_auc': lambda r: _auc(r, 'linf'), 'l2_auc': lambda r: _auc(r, 'l2'),
          'clean': lambda r: r['clean_accuracy']}
    return [_stat(k, _diffs(rows, variant, baseline, grid, f), expected) for k, f in fs.items()]


def dominates(stats: Sequence[Dict], cost_ok: bool) -> str:
    """'met' when A's interval lies above 0, neither AUC interval lies below 0, every unit is in and the cost is
    within the goal; 'not met' when the cost misses or some interval contradicts; 'open' otherwise
    (units missing, or A's interval straddles 0 while nothing contradicts)."""
    by = {s['name']: s for s in stats}
    if not cost_ok or by['A']['verdict'] == 'contradicted' or any(
            by[k]['verdict'] == 'contradicted' for k in ('linf_auc', 'l2_auc')):
        return 'not met'
    if any(s['n'] < s['expected'] for s in stats):
        return 'open'
    return 'met' if by['A']['verdict'] == 'supported' else 'not met'


def confirm(rows: Sequence[Dict], selection: Mapping, ratios: Mapping[str, float],
            grid: Mapping = CONFIRMATION) -> Dict:
    """The goal and the stretch goal of :data:`CRITERIA` on the confirmation (test) rows."""
    v = selection['variant']
    out = {}
    for key, base, cost_ok in (('goal', selection['fgsm'], ratios[v] <= COST_GOAL),
                               ('stretch', selection['pgd'], ratios[v] <= STRETCH_COST * ratios[selection['pgd']])):
        stats = compare(rows, v, base, grid)
        out[key] = {'variant': v, 'baseline': base, 'step_ratio': ratios[v] / ratios[base], 'cost_ok': cost_ok,
                    'statistics': stats, 'verdict': dominates(stats, cost_ok), 'criterion': CRITERIA[key]}
    return out
