"""onnxruntime latency: 50%-channel-pruned vs dense LeNet-5 (against the FLOPs ratio), and ORT vs torch eager."""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from nni.compression.pruning import L1NormPruner

from nni_bap.export import OnnxClassifier, export_onnx
from nni_bap.export.speedup import structured_dependency_config

from .common import line, paired

THREADS = 1


def _profile(path: str, x: np.ndarray, runs: int = 100):
    """Median kernel time (us) of every node, slowest first (onnxruntime's profiler)."""
    import json
    import os
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix='bap-prof-'), 'ort')
    sess = ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
    for _ in range(runs):
        sess.run(None, {'input': x})
    times: Dict[str, list] = {}
    for event in json.load(open(sess.end_profiling())):
        if event.get('cat') == 'Node' and event['name'].endswith('_kernel_time'):
            name = f"{event['args'].get('op_name', '?')} {event['name'][:-len('_kernel_time')].lstrip('/')}"
            times.setdefault(name, []).append(event['dur'])
    return sorted(((n, float(np.median(t))) for n, t in times.items()), key=lambda kv: -kv[1])


def run(model, data) -> List[Dict]:
    torch.set_num_threads(THREADS)
    folder = Path(tempfile.mkdtemp(prefix='bap-bench-'))
    x = data.x_test[:64]
    dense = export_onnx(model, str(folder / 'dense.onnx'), x[:8], validation_inputs=x)
    pruned_model = copy.deepcopy(model)
    cfg = structured_dependency_config(pruned_model, [{'op_types': ['Conv2d'], 'sparse_ratio': 0.5}])
    pruner = L1NormPruner(pruned_model, cfg)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    pruned = export_onnx(pruned_model, str(folder / 'pruned.onnx'), x[:8], masks=masks, validation_inputs=x)
    d_sess, p_sess = OnnxClassifier(dense.path, threads=THREADS), OnnxClassifier(pruned.path, threads=THREADS)
    out = []
    x64 = x.numpy()
    feed = lambda s, a: (lambda: s.session.run(None, {s.input_name: a}))
    a, b = paired(feed(d_sess, x64), feed(p_sess, x64), reps=200, warmup=20)
    flops_ratio = dense.efficiency['flops'] / pruned.efficiency['flops']
    speed = a / b
    out.append(line('ort_pruned50_vs_dense_b64_speedup_over_flops_ratio', speed / flops_ratio, a, b, '>= 0.8',
                    speed / flops_ratio >= 0.8))
    print(f'  info: latency speedup {speed:.2f}x, FLOPs ratio {flops_ratio:.2f} '
          f'({dense.efficiency["flops"]} / {pruned.efficiency["flops"]}), params {dense.efficiency["params"]} / '
          f'{pruned.efficiency["params"]}, file bytes {dense.efficiency["file_bytes"]} / '
          f'{pruned.efficiency["file_bytes"]}, max |ORT - torch| {dense.onnx_max_abs_diff:.2e} / '
          f'{pruned.onnx_max_abs_diff:.2e} on {len(x)} test images, {THREADS} thread', flush=True)
    x1n = data.x_test[:1].numpy()
    a1, b1 = paired(feed(d_sess, x1n), feed(p_sess, x1n), reps=300, warmup=30)
    print(f'  info: ORT batch 1 median: dense {a1:.3f} ms, pruned {b1:.3f} ms ({a1 / b1:.2f}x); '
          f'batch 64: dense {a:.3f} ms, pruned {b:.3f} ms', flush=True)
    for label, path in (('dense', dense.path), ('pruned', pruned.path)):
        top = ', '.join(f'{n} {t:.0f} us' for n, t in _profile(path, x64)[:3])
        print(f'  info: slowest ORT kernels, {label} b64: {top}', flush=True)
    x1 = data.x_test[:1]
    eager = model.eval()

    def torch_b1():
        with torch.no_grad():
            eager(x1)
    a, b = paired(torch_b1, feed(d_sess, x1.numpy()), reps=300, warmup=30)
    out.append(line('ort_vs_torch_eager_b1_speedup', a / b, a, b, '>= 2', a / b >= 2))
    return out
