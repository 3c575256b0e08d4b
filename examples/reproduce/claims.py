"""The BAP paper's three claims as paired statistics with bootstrap intervals, and their verdicts.

Pure functions of ``aer.json``-style rows (``method``, ``process``, ``seed``, ``sparsity``, ``clean_accuracy``,
``robust_auc`` with ``linf`` and ``l2``), so the criteria can be read, and tested, apart from the runs.

Scores of one run: *robustness* ``R = (AUC_linf + AUC_l2) / 2`` (worst-case AUCs) and the *AER score*
``A = (clean + AUC_linf + AUC_l2) / 3``; runs compared at the same sparsity have the same efficiency, so
A carries the accuracy and robustness sides of AER. Every statistic is the mean of per-unit paired
differences, a unit being a (seed, sparsity) or (process, seed, sparsity) cell in which every run it needs
finished; its 95% interval is the percentile bootstrap over units. A statistic's verdict is *supported*
when its interval lies above 0, *contradicted* when it lies below 0, *inconclusive* otherwise; a claim is
supported when all its statistics are, contradicted when any is, inconclusive otherwise, and inconclusive
whenever fewer than :data:`MIN_SEEDS` seeds reach a statistic.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

__all__ = ['CRITERIA', 'MIN_SEEDS', 'aer_score', 'bootstrap_mean', 'claim_verdict', 'evaluate_claims', 'robustness',
           'verdict']

MIN_SEEDS = 3
#: Each claim's criterion, in words (the results README prints these before any number).
CRITERIA = {
    'claim1': ('*The robustness of gradually pruned models varies strongly with the pruning process, above all '
               'against strong attacks.* Natural pruning, unit = (seed, sparsity). Supported when both intervals '
               'lie above 0: (a) process gap of R minus process gap of clean accuracy, (b) process gap of R minus '
               'seed gap of R (the gap between two seeds of one process, averaged over the processes), where a '
               'process gap is |value(process 1) - value(process 2)| at the same seed and sparsity. '
               'Contradicted when either lies below 0.'),
    'claim2': ('*Uniform-budget adversarial pruning is sensitive to its budget; BAP is not.* At the first process, '
               'unit = (seed, sparsity): the budget gap of A for FGSM-RS adversarial pruning (|A(eps 0.3) - '
               'A(eps 0.1)|) minus that of BAP over the same 3x range of its fixed cutoff (|A(cutoff 3) - '
               'A(cutoff 1)|). Supported when the interval lies above 0, contradicted when below.'),
    'claim3': ('*BAP\'s robustness is more stable across pruning processes than uniform-budget adversarial '
               'pruning\'s, and its AER balance is better.* Against each baseline (FGSM-RS and PGD-10 adversarial '
               'pruning at eps 0.1): (a) stability, unit = (seed, sparsity): process gap of R of the baseline minus '
               'that of BAP; (b) AER, unit = (process, seed, sparsity): A(BAP) - A(baseline). Supported when all '
               'four intervals lie above 0, contradicted when any lies below 0.'),
}
Key = Tuple[str, str, int, float]


def robustness(row: Dict) -> float:
    """R: mean of the worst-case Linf and L2 robust AUCs."""
    return (row['robust_auc']['linf'] + row['robust_auc']['l2']) / 2


def aer_score(row: Dict) -> float:
    """A: mean of clean accuracy and the worst-case Linf and L2 robust AUCs."""
    return (row['clean_accuracy'] + row['robust_auc']['linf'] + row['robust_auc']['l2']) / 3


def clean(row: Dict) -> float:
    return row['clean_accuracy']


def bootstrap_mean(values: Sequence[float], n_boot: int = 10000, seed: int = 0) -> Tuple[float, float, float]:
    """(mean, 2.5th and 97.5th percentile of the bootstrap means over units); NaNs when there are no values."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return float('nan'), float('nan'), float('nan')
    means = v[np.random.default_rng(seed).integers(0, v.size, (n_boot, v.size))].mean(axis=1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def verdict(low: float, high: float) -> str:
    """'supported' (interval above 0), 'contradicted' (below 0) or 'inconclusive'."""
    if low > 0:
        return 'supported'
    if high < 0:
        return 'contradicted'
    return 'inconclusive'


def claim_verdict(stats: Sequence[Dict]) -> str:
    """Supported when every statistic is, contradicted when any is, else inconclusive (also when one is missing)."""
    names = [s['verdict'] for s in stats]
    if not names or any(s['seeds'] < MIN_SEEDS for s in stats):
        return 'inconclusive'
    if 'contradicted' in names:
        return 'contradicted'
    return 'supported' if all(n == 'supported' for n in names) else 'inconclusive'


def _index(rows: Sequence[Dict]) -> Dict[Key, Dict]:
    return {(r['method'], r['process'], int(r['seed']), float(r['sparsity'])): r for r in rows}


def _stat(name: str, units: List[Tuple[int, float]]) -> Dict:
    """One statistic from ``[(seed, difference), ...]``."""
    mean, low, high = bootstrap_mean([d for _, d in units])
    seeds = len({s for s, _ in units})
    out = {'name': name, 'n': len(units), 'seeds': seeds, 'mean': mean, 'interval': [low, high],
           'verdict': verdict(low, high) if units else 'inconclusive'}
    if seeds < MIN_SEEDS:
        out['verdict'] = 'inconclusive'
        out['reason'] = f'{seeds} seed(s) finished, {MIN_SEEDS} needed'
    return out


def _process_gap(ix: Dict, method: str, procs: Sequence[str], seed: int, sp: float, f: Callable) -> float:
    vals = [f(ix[(method, p, seed, sp)]) for p in procs]
    return float(max(vals) - min(vals))


def _has(ix: Dict, methods: Sequence[str], procs: Sequence[str], seed: int, sp: float) -> bool:
    return all((m, p, seed, sp) in ix for m in methods for p in procs)


def claim1(ix: Dict, grid: Dict) -> Dict:
    procs, seeds = grid['processes'], grid['seeds']
    a, b = [], []
    for sp in grid['sparsities']:
        for i, s in enumerate(seeds):
            s2 = seeds[(i + 1) % len(seeds)]
            if s2 == s or not _has(ix, ['natural'], procs, s, sp) or not _has(ix, ['natural'], procs, s2, sp):
                continue
            gap = _process_gap(ix, 'natural', procs, s, sp, robustness)
            a.append((s, gap - _process_gap(ix, 'natural', procs, s, sp, clean)))
            seed_gap = np.mean([abs(robustness(ix[('natural', p, s, sp)]) - robustness(ix[('natural', p, s2, sp)]))
                                for p in procs])
            b.append((s, gap - float(seed_gap)))
    stats = [_stat('process gap of R - process gap of clean accuracy (natural)', a),
             _stat('process gap of R - seed gap of R (natural)', b)]
    return {'criterion': CRITERIA['claim1'], 'statistics': stats, 'verdict': claim_verdict(stats)}


def claim2(ix: Dict, grid: Dict) -> Dict:
    p = grid['claim2_process']
    pairs = {'adversarial': ('adversarial-fgsm0.1', 'adversarial-fgsm0.3'), 'bap': ('bap-c1.0', 'bap-c3.0')}
    need = [m for pair in pairs.values() for m in pair]
    units = []
    for sp in grid.get('claim2_sparsities', grid['sparsities']):
        for s in grid['seeds']:
            if _has(ix, need, [p], s, sp):
                gap = {k: abs(aer_score(ix[(hi, p, s, sp)]) - aer_score(ix[(lo, p, s, sp)]))
                       for k, (lo, hi) in pairs.items()}
                units.append((s, gap['adversarial'] - gap['bap']))
    stats = [_stat('budget gap of A: FGSM-RS eps 0.1 vs 0.3 - BAP cutoff 1 vs 3', units)]
    return {'criterion': CRITERIA['claim2'], 'statistics': stats, 'verdict': claim_verdict(stats)}


def claim3(ix: Dict, grid: Dict, baselines: Sequence[str] = ('adversarial-fgsm0.1', 'adversarial-pgd0.1')) -> Dict:
    procs, stats = grid['processes'], []
    for base in baselines:
        stab, aer = [], []
        for sp in grid['sparsities']:
            for s in grid['seeds']:
                if _has(ix, [base, 'bap'], procs, s, sp):
                    stab.append((s, _process_gap(ix, base, procs, s, sp, robustness)
                                 - _process_gap(ix, 'bap', procs, s, sp, robustness)))
                aer += [(s, aer_score(ix[('bap', p, s, sp)]) - aer_score(ix[(base, p, s, sp)]))
                        for p in procs if _has(ix, [base, 'bap'], [p], s, sp)]
        stats += [_stat(f'process gap of R: {base} - bap', stab), _stat(f'A: bap - {base}', aer)]
    return {'criterion': CRITERIA['claim3'], 'statistics': stats, 'verdict': claim_verdict(stats)}


def evaluate_claims(rows: Sequence[Dict], grid: Dict) -> Dict[str, Dict]:
    """The three claims on ``rows`` of the ``grid`` (``processes``, ``sparsities``, ``seeds``, ``claim2_process``,
    optionally ``claim2_sparsities``: claim 2's sparsities, by default all)."""
    ix = _index(rows)
    return {'claim1': claim1(ix, grid), 'claim2': claim2(ix, grid), 'claim3': claim3(ix, grid)}
