"""Robustness reached by default BAP vs the all-class reference (same data, seeds, schedule), judged by the
worst-case evaluation."""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch
from nni.compression.pruning import LevelPruner

from nni_bap.evaluation.robustness import evaluate_robustness
from nni_bap.pruning.compat import finalize
from nni_bap.pruning.pruner import BAPPruner
from nni_bap.pruning.training import make_evaluator

from .common import line

CFG = [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.8}]


def _prune(model, data, seed: int, reference: bool, n_train: int = 2000, epochs: int = 2) -> Dict[str, float]:
    import copy
    import time
    torch.manual_seed(seed)
    model = copy.deepcopy(model)
    ds = torch.utils.data.TensorDataset(data.x_train[:n_train], data.y_train[:n_train])
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(seed))
    base = LevelPruner(model, CFG, evaluator=make_evaluator(model, loader, progress=False))
    steps = epochs * len(loader)
    pruner = BAPPruner(base, interval_steps=max(1, int(0.7 * steps) // 5), total_times=5, log_interval=0)
    if reference:
        pruner.generator.candidates = None
        pruner.generator.drop_crossed = False
    start = time.perf_counter()
    pruner.compress(max_steps=steps, max_epochs=None)
    seconds = time.perf_counter() - start
    plain = finalize(pruner)
    x, y = data.x_test[:500], data.y_test[:500]
    rep = evaluate_robustness(plain, x, y, progress=False)  # the worst case, never one attack
    kp = {(k['norm'], k['budget']): k['accuracy'] for k in rep['key_points']}
    return {'clean': rep['clean_accuracy'], 'linf0.1': kp[('linf', 0.1)], 'l2_1.5': kp[('l2', 1.5)],
            'median_l2': rep['median_deepfool_l2'], 'seconds': seconds}


def run(model, data, seeds=(0, 1)) -> List[Dict]:
    res = {kind: [_prune(model, data, s, kind == 'reference') for s in seeds] for kind in ('default', 'reference')}
    out = []
    for kind, runs in res.items():
        means = {k: np.mean([r[k] for r in runs]) for k in runs[0]}
        spread = {k: np.ptp([r[k] for r in runs]) for k in runs[0]}
        text = (f'  info: BAP {kind:<9} LeNet-5 sparsity 0.8: clean {means["clean"]:.4f} (+-{spread["clean"] / 2:.4f}), '
                f'worst case Linf 0.1 {means["linf0.1"]:.4f} (+-{spread["linf0.1"] / 2:.4f}), L2 1.5 '
                f'{means["l2_1.5"]:.4f} (+-{spread["l2_1.5"] / 2:.4f}), median DeepFool L2 {means["median_l2"]:.3f}, '
                f'prune {means["seconds"]:.1f} s (500 test images)')
        print(text, flush=True)
        out.append({'name': f'bap_{kind}_robustness', 'text': text, 'ok': True, **means})
    d, r = out[0], out[1]
    noise = max(0.02, max(np.ptp([x['linf0.1'] for x in res[k]]) for k in res))
    diff = abs(d['linf0.1'] - r['linf0.1'])
    out.append(line('bap_default_vs_reference_worst_linf0.1_acc', d['linf0.1'] / r['linf0.1'], d['seconds'] * 1e3,
                    r['seconds'] * 1e3, f'|diff| {diff:.3f} <= noise {noise:.3f}', diff <= noise))
    return out
