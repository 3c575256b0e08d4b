"""The worst case against an independent attacker, at budgets that are not key points (issue 23).

``python -m benchmarks.independent [--out runs/independent] [--images 2000]``: a sweep of MNIST LeNet-5 at sparsity
0.9 (natural, FGSM-RS 0.1, BAP) with the library's default evaluation, then, for each exported model and the dense
one, an attacker that shares no code with the cascade: IBM ART's APGD-CE and APGD-DLR, a PGD-40 on the CE and on the
margin (CW) loss (Linf), PGD-L2-40 (L2); every adversarial input classified by onnxruntime. Prints the project's
worst case next to the independent one at Linf 0.15 / 0.2 and L2 1 / 2 (the L2 attacks on the first 300 images).
Resumable (the sweep reuses finished runs). One thread: ``OMP_NUM_THREADS=1``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import torch
from torch import nn

from nni_bap.attacks import PGD, PGDL2
from nni_bap.cli.config import RunConfig, load_config
from nni_bap.cli.jobs import load_data
from nni_bap.cli.run_folder import RunFolder
from nni_bap.cli.sweep import run_sweep
from nni_bap.export.runtime import OnnxClassifier

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = {'linf': (0.15, 0.2), 'l2': (1.0, 2.0)}
L2_IMAGES = 300


class _Margin(PGD):
    """PGD on the margin loss ``max_{j != y} z_j - z_y`` (Carlini-Wagner's) instead of CE."""

    def loss_grad(self, x, y):
        x = x.detach().requires_grad_(True)
        z = self.model(x)
        other = z.scatter(1, y[:, None], -torch.inf).amax(1)
        (g,) = torch.autograd.grad((other - z.gather(1, y[:, None]).squeeze(1)).sum(), x)
        return g


def _art(model: nn.Module, x, y, norm: str, eps: float, loss: str) -> np.ndarray:
    from art.attacks.evasion import AutoProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier
    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
                            clip_values=(0.0, 1.0))
    np.random.seed(0)
    atk = AutoProjectedGradientDescent(clf, norm=np.inf if norm == 'linf' else 2, eps=eps, eps_step=2 * eps,
                                       max_iter=50, nb_random_init=1, batch_size=500, loss_type=loss, verbose=False)
    return atk.generate(x.numpy(), y=y.numpy())


def independent(model: nn.Module, ort: OnnxClassifier, x, y, norm: str, eps: float) -> float:
    """Per-sample worst case of the independent attacks, classified by onnxruntime."""
    torch.manual_seed(0)
    advs = [_art(model, x, y, norm, eps, 'cross_entropy'), _art(model, x, y, norm, eps, 'difference_logits_ratio')]
    if norm == 'linf':
        advs += [PGD(model, eps=eps, steps=40)(x, y).numpy(), _Margin(model, eps=eps, steps=40)(x, y).numpy()]
    else:
        advs += [PGDL2(model, eps=eps, steps=40)(x, y).numpy()]
    yn = y.numpy()
    robust = ort.predict(x.numpy()) == yn
    for a in advs:
        robust &= ort.predict(a) == yn
    return float(robust.mean())


def compare(folder: Path, images: int) -> Dict:
    run = RunFolder(folder)
    cfg, model, _ = run.load_model()
    data = load_data(cfg)
    rep = run.read_json('report.json')
    ort = OnnxClassifier(str(folder / 'model.onnx'), threads=1)
    out = {}
    for norm, budgets in BUDGETS.items():
        n = images if norm == 'linf' else L2_IMAGES
        x, y = data.x_test[:n], data.y_test[:n]
        curve = dict(zip(rep['curves'][norm]['budgets'], rep['curves'][norm]['accuracy']['torch']))
        for b in budgets:  # the project's curve over the same images: the report's on all, recomputed on a subset
            ours = curve[b] if n == rep['samples'] else _subset_worst(model, x, y, norm, b, cfg)
            out[f'{norm} {b:g}'] = {'project': ours, 'independent': independent(model, ort, x, y, norm, b), 'n': n}
    return out


def _subset_worst(model, x, y, norm, budget, cfg) -> float:
    from nni_bap.cli.jobs import run_spec
    from nni_bap.evaluation.robustness import evaluate_robustness
    spec = {norm: run_spec(cfg, tuple(x.shape[1:])).to_dict()[norm]}
    torch.manual_seed(cfg.seed)
    rep = evaluate_robustness(model, x, y, spec, progress=False, huge_eps=0)
    return dict(zip(rep['curves'][norm]['budgets'], rep['curves'][norm]['accuracy']['torch']))[budget]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', type=Path, default=ROOT / 'runs' / 'independent')
    ap.add_argument('--images', type=int, default=2000)
    args = ap.parse_args(argv)
    raw = load_config(str(ROOT / 'examples' / 'configs' / 'mnist_lenet5.yaml'))
    cfg = RunConfig.from_dict({**raw, 'test_limit': args.images}, ROOT / 'examples' / 'configs')
    run_sweep(cfg, [0.9], ['natural', 'adversarial-fgsm0.1', 'bap'], args.out, progress=False, resume=True)
    table = {}
    for name, folder in [('dense', args.out / 'dense-seed0')] + [
            (m, args.out / f'{cfg.schedule}-seed0' / f'{m}-0.9') for m in ('natural', 'adversarial-fgsm0.1', 'bap')]:
        table[name] = compare(folder, args.images)
        print(name, json.dumps(table[name]), flush=True)
    (args.out / 'independent.json').write_text(json.dumps(table, indent=2))
    print('| model | ' + ' | '.join(f'{k}: project / independent' for k in table['dense']) + ' |')
    for name, row in table.items():
        print(f'| {name} | ' + ' | '.join(f'{v["project"]:.3f} / {v["independent"]:.3f} ({v["project"] - v["independent"]:+.3f})'
                                          for v in row.values()) + ' |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
