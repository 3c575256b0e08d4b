"""Shared pieces: a trained LeNet-5 on MNIST (or digits when MNIST is absent), paired timing."""
from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn

from nni_bap.data import DataSplit, load_digits, load_mnist
from nni_bap.models import build_model
from nni_bap.utils.timing import alternating_ms

MNIST_DIR = Path(os.environ.get('BAP_MNIST_DIR', Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data' / 'mnist'))


def data() -> DataSplit:
    """MNIST from ``../shared/data/mnist`` (or ``$BAP_MNIST_DIR``); digits when it is absent."""
    if (MNIST_DIR / 't10k-images-idx3-ubyte.gz').exists():
        return load_mnist(str(MNIST_DIR))
    return load_digits()


def trained_lenet(d: DataSplit, epochs: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    c, s, _ = d.input_shape
    model = build_model('lenet5', c, 10, s)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for i in range(0, len(d.x_train), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(d.x_train[i:i + 64]), d.y_train[i:i + 64]).backward()
            opt.step()
    return model.eval()


def paired(a: Callable[[], object], b: Callable[[], object], reps: int = 7, warmup: int = 2) -> Tuple[float, float]:
    """Median wall times (ms) of ``a`` and ``b``, measured in alternation after warm-up."""
    ms = alternating_ms({'a': a, 'b': b}, reps, warmup)
    return ms['a'], ms['b']


def line(name: str, ratio: float, a_ms: float, b_ms: float, goal: str, ok: bool) -> Dict:
    text = f'{name}: {ratio:.2f} ({a_ms:.2f} ms / {b_ms:.2f} ms) goal {goal} {"ok" if ok else "MISS"}'
    print(text, flush=True)
    return {'name': name, 'ratio': ratio, 'a_ms': a_ms, 'b_ms': b_ms, 'goal': goal, 'ok': ok, 'text': text}


def info(text: str) -> Dict:
    """An indented information line, printed now and kept for RESULTS.md."""
    text = f'  info: {text}'
    print(text, flush=True)
    return {'goal': 'info', 'text': text}


def paired_profiles(clfs: Dict[str, object], x, rounds: int = 7, repeats: int = 20) -> Dict[str, List[Dict]]:
    """Kernel profiles of several models taken in alternating rounds; per node the median over rounds."""
    rows: Dict[str, Dict[tuple, Dict]] = {label: {} for label in clfs}
    times: Dict[str, Dict[tuple, List[float]]] = {label: {} for label in clfs}
    for _ in range(rounds):
        for label, clf in clfs.items():
            for r in clf.profile(x, repeats=repeats):
                rows[label].setdefault((r['op'], r['node']), r)
                times[label].setdefault((r['op'], r['node']), []).append(r['median_us'])
    for label in clfs:
        for key, row in rows[label].items():
            row['median_us'] = statistics.median(times[label][key])
    return {label: sorted(rows[label].values(), key=lambda r: -r['median_us']) for label in clfs}
