"""Robustness parity: BAP's current default vs the previous default (top-3 candidates), LeNet-5 pruned to 0.8.

MNIST from ``../shared/data/mnist`` (train: images 0-7999, test: 8000-9999), one dense LeNet-5 per seed,
then each setting prunes a copy of it with the same data order; robustness is the project's worst-case
evaluation (:func:`nni_bap.evaluation.robustness.evaluate_robustness`: key points Linf 0.1, 0.3 and L2 1.5, and the
robust AUC per norm). Per seed and key point it prints both settings, then the mean paired difference and
the noise: 2 x the standard error of the per-seed paired differences (the largest seed-to-seed spread of
either setting is printed beside it). Not part of ``make bench`` (about 15 minutes on one thread)::

    OMP_NUM_THREADS=1 python -m benchmarks.bap_parity [--seeds 0,1,2] [--test 1000] [--epochs 3] [--warm]
"""
from __future__ import annotations

import argparse
import copy
import inspect
import logging
import statistics
import time
from typing import Dict, List

import torch
from nni.compression.pruning import LevelPruner
from torch.utils.data import DataLoader, Dataset

from nni_bap.evaluation.robustness import evaluate_robustness
from nni_bap.pruning.compat import finalize
from nni_bap.pruning.pruner import BAPPruner
from nni_bap.pruning.training import make_evaluator

from .common import data, trained_lenet

CFG = [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.8}]
_DEFAULT = {k: v.default for k, v in inspect.signature(BAPPruner).parameters.items()
            if k in ('attack_steps', 'candidates')}
SETTINGS = {'previous': {'attack_steps': 5, 'candidates': 3}, 'new': dict(_DEFAULT),
            'new+warm': {**_DEFAULT, 'warm_start': True}}


class Indexed(Dataset):
    """``(x, y, index)`` triples: what BAP's warm start needs from the data pipeline."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i], i


def prune(dense, d, seed: int, settings: Dict, epochs: int, batch: int = 64) -> Dict:
    """Prune a copy of ``dense`` to 0.8 with BAP ``settings``; the pruned model, its cost and statistics."""
    torch.manual_seed(seed)
    model = copy.deepcopy(dense)
    loader = DataLoader(Indexed(d.x_train, d.y_train), batch_size=batch, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    base = LevelPruner(model, CFG, evaluator=make_evaluator(model, loader, progress=False))
    steps = epochs * len(loader)
    pruner = BAPPruner(base, interval_steps=max(1, int(0.7 * steps) // 5), total_times=5, log_interval=0,
                       **settings)
    start = time.perf_counter()
    pruner.compress(max_steps=steps, max_epochs=None)
    seconds = time.perf_counter() - start
    summary = pruner.summary()
    return {'model': finalize(pruner), 'seconds': seconds, 'iterations': summary['deepfool_iterations'],
            'norm': summary['norm_mean']}


def measure(model, d, n_test: int) -> Dict[str, float]:
    """Clean accuracy, the key points' worst-case accuracies and the robust AUCs on the first ``n_test`` test images."""
    rep = evaluate_robustness(model, d.x_test[:n_test], d.y_test[:n_test], progress=False)
    out = {'clean': rep['clean_accuracy']}
    out.update({f"{kp['norm']} {kp['budget']:g}": kp['accuracy'] for kp in rep['key_points']})
    out.update({f'AUC {k}': v for k, v in rep['robust_auc'].items()})
    return out


def _verdict(diff: float, noise: float) -> str:
    """``yes`` within the noise; else ``better`` or ``worse`` (every metric here is an accuracy: higher is better)."""
    return 'yes' if abs(diff) <= noise else ('better' if diff > 0 else 'worse')


def table(results: Dict[str, List[Dict]], n_test: int, a: str = 'previous', b: str = 'new') -> List[str]:
    """The parity table: per seed and metric ``a`` vs ``b``, the mean paired difference ``b - a`` and the noise.

    Noise: 2 x the standard error of the per-seed paired differences, at least one test image (``1 / n_test``:
    identical differences, e.g. at a key point where every model is near 0, give a standard error of 0).
    The largest seed-to-seed spread of either setting is printed, and judged, beside it.
    """
    keys = list(results[a][0]['metrics'])
    lines = [f'{"metric":<10} ' + ' '.join(f'seed{s["seed"]} {a[:4]}/{b[:4]:<4}' for s in results[a])
             + '  mean diff  noise 2SE  within  spread  within']
    for k in keys:
        pa = [r['metrics'][k] for r in results[a]]
        pb = [r['metrics'][k] for r in results[b]]
        diffs = [y - x for x, y in zip(pa, pb)]
        mean = statistics.mean(diffs)
        noise = max(2 * statistics.stdev(diffs) / len(diffs) ** 0.5, 1 / n_test) if len(diffs) > 1 else float('nan')
        spread = max(max(pa) - min(pa), max(pb) - min(pb))
        cells = ' '.join(f'{x:.3f}/{y:.3f}      ' for x, y in zip(pa, pb))
        lines.append(f'{k:<10} {cells} {mean:+.4f}    {noise:.4f}     {_verdict(mean, noise):<6}'
                     f'  {spread:.3f}   {_verdict(mean, spread)}')
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seeds', default='0,1,2')
    ap.add_argument('--test', type=int, default=1000, help='test images evaluated')
    ap.add_argument('--epochs', type=int, default=3, help='pruning epochs over the 8000 training images')
    ap.add_argument('--warm', action='store_true', help='also run the new default with warm start')
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # BAP trains against DeepFool, so the evaluator's "robustness specific to DeepFool" flag is expected here
    logging.getLogger('nni_bap.evaluation.robustness').setLevel(logging.ERROR)
    torch.set_num_threads(1)
    d = data()
    names = ['previous', 'new'] + (['new+warm'] if args.warm else [])
    results: Dict[str, List[Dict]] = {n: [] for n in names}
    for seed in (int(s) for s in args.seeds.split(',')):
        dense = trained_lenet(d, seed=seed)
        for name in names:
            run = prune(dense, d, seed, SETTINGS[name], args.epochs)
            run.update(seed=seed, metrics=measure(run.pop('model'), d, args.test))
            results[name].append(run)
            print(f'seed {seed} {name:<9} {SETTINGS[name]}: prune {run["seconds"]:.1f} s, DeepFool iterations '
                  f'{run["iterations"]:.2f}, mean AE norm {run["norm"]:.3f}, ' +
                  ', '.join(f'{k} {v:.3f}' for k, v in run['metrics'].items()), flush=True)
    print(f'\nparity, {d.name} LeNet-5 sparsity 0.8, {args.epochs} pruning epochs, {args.test} test images; '
          'noise = 2 x standard error of the per-seed paired differences (new - previous), at least 1 image')
    print('\n'.join(table(results, args.test)))
    for name in names:
        runs = results[name]
        print(f'{name:<9}: prune {statistics.mean(r["seconds"] for r in runs):.1f} s, DeepFool iterations '
              f'{statistics.mean(r["iterations"] for r in runs):.2f} (means over seeds)')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
