"""BAP end to end on sklearn's digits, NNI style (under a minute on 2 cores).

    python examples/prune_digits.py
"""
from __future__ import annotations

import logging

import torch
from nni.compression.pruning import AGPPruner, LevelPruner
from torch.utils.data import DataLoader

from nni_bap import BAPPruner, finalize
from nni_bap.data import load_digits
from nni_bap.evaluation.robustness import evaluate_robustness
from nni_bap.models import DigitsCNN
from nni_bap.pruning.training import make_evaluator, train

logging.basicConfig(level=logging.INFO, format='%(message)s')
log = logging.getLogger('prune_digits')


def robustness(model, x, y):
    """Clean accuracy and the worst case over FMN, DeepFool and APGD at each key point (never one attack)."""
    rep = evaluate_robustness(model, x, y, progress=False)
    points = '  '.join(f'{k["norm"]} {k["budget"]:g}: {k["accuracy"]:.3f} [{k["interval"][0]:.3f}, '
                       f'{k["interval"][1]:.3f}]' for k in rep['key_points'])
    return rep['clean_accuracy'], points


def prune(dense, data, scheduled_cls, **settings):
    model = DigitsCNN()
    model.load_state_dict(dense.state_dict())
    loader = DataLoader(data.train_set(), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    config_list = [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.8}]
    # the evaluator goes to the base pruner (NNI rebuilds an empty optimizer otherwise)
    base = LevelPruner(model, config_list, evaluator=make_evaluator(model, loader, progress=False))
    pruner = scheduled_cls(base, interval_steps=16, total_times=10, **settings)
    pruner.compress(max_steps=10 * len(loader), max_epochs=None)
    if isinstance(pruner, BAPPruner):
        s = pruner.summary()
        log.info('BAP statistics: AE L2 norm %.3f before the cut, %.3f after; AE error %.3f; final sparsity %.3f',
                 s['norm_mean'], s['cut_norm_mean'], s['ae_error'], s['final_sparsity'])
    return finalize(pruner)  # masks baked into the weights, wrappers removed


def main():
    torch.manual_seed(0)
    data = load_digits()
    dense = train(DigitsCNN(), data.train_set(), epochs=15, progress=False)
    x, y = data.x_test, data.y_test
    for name, model in [('dense', dense), ('natural AGP', prune(dense, data, AGPPruner)),
                        ('BAP', prune(dense, data, BAPPruner, cutoff='adaptive', scale=1.0))]:
        clean, points = robustness(model, x, y)
        log.info('%-12s clean %.3f  worst case %s (n=%d)', name, clean, points, len(y))


if __name__ == '__main__':
    main()
