"""Run an exported classifier with onnxruntime: accuracy, accuracy on saved adversarial inputs, latency,
and where that latency goes (a per-node kernel profile).

Imports only numpy and onnxruntime (no torch, no NNI), so it runs on the device as it is.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from .errors import CorruptModelError, InputShapeError

__all__ = ['OnnxClassifier', 'load_npz']

_logger = logging.getLogger(__name__)


def load_npz(path: str) -> Dict[str, np.ndarray]:
    """Adversarial inputs saved by the exporter: arrays ``x`` (float32, NCHW) and ``y`` (labels)."""
    with np.load(path) as data:
        if 'x' not in data or 'y' not in data:
            raise KeyError(f'{path} must hold arrays x and y, has {sorted(data.files)}')
        return {'x': data['x'].astype(np.float32), 'y': data['y'].astype(np.int64)}


@dataclass
class OnnxClassifier:
    """An onnxruntime (CPU) session around a classifier exported by :func:`nni_bap.export.export_onnx`.

    Parameters
    ----------
    path
        The ``.onnx`` file.
    threads
        Intra-op thread count (0: onnxruntime's default).
    """

    path: str
    threads: int = 0

    def __post_init__(self):
        self.session = self._session()
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(inp.shape[1:])
        self.output_names = [o.name for o in self.session.get_outputs()]
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata: Dict[str, str] = dict(meta)

    def _session(self, profile_prefix: Optional[str] = None):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = int(self.threads)
            opts.inter_op_num_threads = 1
        if profile_prefix:
            opts.enable_profiling = True
            opts.profile_file_prefix = profile_prefix
        try:
            return ort.InferenceSession(self.path, sess_options=opts, providers=['CPUExecutionProvider'])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise CorruptModelError(f'onnxruntime cannot load {self.path}: {exc}') from exc

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != tuple(self.input_shape):
            raise InputShapeError(f'{self.path} expects inputs of shape (batch, {", ".join(map(str, self.input_shape))}),'
                                  f' got {x.shape}')
        return x

    def logits(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Raw outputs for ``x`` (float32, batch first)."""
        x = self._check(x)
        outs = [self.session.run(None, {self.input_name: x[i:i + batch_size]})[0] for i in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0,), np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(1)

    __call__ = predict

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        """Clean accuracy on ``(x, y)``."""
        return float((self.predict(x) == np.asarray(y)).mean())

    def accuracy_npz(self, path: str) -> float:
        """Accuracy on adversarial inputs crafted on the torch model and saved as ``.npz``."""
        data = load_npz(path)
        return self.accuracy(data['x'], data['y'])

    def latency(self, batch_size: int = 1, warmup: int = 10, repeats: int = 100,
                x: Optional[np.ndarray] = None) -> Dict[str, float]:
        """Median and p90 wall time (ms) of one run at ``batch_size``, after warm-up."""
        if x is None:
            x = np.random.default_rng(0).random((batch_size,) + tuple(self.input_shape), dtype=np.float32)
        feed = {self.input_name: x[:batch_size]}
        for _ in range(warmup):
            self.session.run(None, feed)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            self.session.run(None, feed)
            times.append((time.perf_counter() - t) * 1e3)
        return {'batch_size': batch_size, 'median_ms': float(np.median(times)), 'p90_ms': float(np.percentile(times, 90))}

    def profile(self, x: np.ndarray, repeats: int = 50) -> List[Dict]:
        """Where the time goes: median kernel time of every node of the optimised graph, slowest first.

        Runs ``x`` ``repeats`` times in a profiling session (same thread settings) and reads
        onnxruntime's profiler. Node names are those of the graph onnxruntime executes, after its own
        rewrites (e.g. ``..._nchwc`` convolutions with a fused activation, ``ReorderOutput`` layout
        conversions), which is what explains a latency that does not follow the FLOPs.

        Returns
        -------
        list of dict
            ``{'op': op type, 'node': node name, 'median_us': float, 'share': fraction of the summed
            medians, 'index': position in execution order}``.
        """
        folder = tempfile.mkdtemp(prefix='bap-ort-profile-')
        try:
            session = self._session(profile_prefix=os.path.join(folder, 'ort'))
            feed = {self.input_name: self._check(x)}
            for _ in range(repeats):
                session.run(None, feed)
            with open(session.end_profiling()) as fh:
                events = json.load(fh)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        times: Dict[tuple, list] = {}
        for event in events:
            if event.get('cat') == 'Node' and event['name'].endswith('_kernel_time'):
                key = (event['args'].get('op_name', '?'), event['name'][:-len('_kernel_time')].lstrip('/'))
                times.setdefault(key, []).append(event['dur'])
        rows = [{'op': op, 'node': node, 'median_us': float(np.median(t)), 'index': i}
                for i, ((op, node), t) in enumerate(times.items())]
        total = sum(r['median_us'] for r in rows) or 1.0
        for r in rows:
            r['share'] = r['median_us'] / total
        return sorted(rows, key=lambda r: -r['median_us'])
