"""Run an exported classifier with onnxruntime: accuracy, accuracy on saved adversarial inputs, latency.

Imports only numpy and onnxruntime (no torch, no NNI), so it runs on the device as it is.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Dict, Optional

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
        import onnxruntime as ort
        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = int(self.threads)
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(self.path, sess_options=opts, providers=['CPUExecutionProvider'])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise CorruptModelError(f'onnxruntime cannot load {self.path}: {exc}') from exc
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(inp.shape[1:])
        self.output_names = [o.name for o in self.session.get_outputs()]
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata: Dict[str, str] = dict(meta)

    def logits(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Raw outputs for ``x`` (float32, batch first)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != tuple(self.input_shape):
            raise InputShapeError(f'{self.path} expects inputs of shape (batch, {", ".join(map(str, self.input_shape))}),'
                                  f' got {x.shape}')
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
