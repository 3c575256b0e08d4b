"""Run an exported classifier with onnxruntime: accuracy, accuracy on saved adversarial inputs, latency,
and where that latency goes (a per-node kernel profile).

Imports only numpy and onnxruntime (no torch, no NNI), so it runs on the device as it is.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

import numpy as np

from ..errors import ConfigError, CorruptModelError, InputShapeError, InputValueError

__all__ = ['OnnxClassifier', 'load_npz']

#: ONNX ``TensorProto`` data types of floating-point weights (FLOAT, FLOAT16, DOUBLE, BFLOAT16).
_FLOAT_TYPES = (1, 10, 11, 16)


def _weights(graph) -> Iterator:
    """Every tensor a graph holds: initializers, sparse initializers' values, constants, and those of subgraphs."""
    yield from graph.initializer
    yield from (s.values for s in graph.sparse_initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField('t'):
                yield attr.t
            yield from attr.tensors
            if attr.HasField('g'):
                yield from _weights(attr.g)
            for sub in attr.graphs:
                yield from _weights(sub)


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

    Raises
    ------
    CorruptModelError
        The file cannot be loaded, its graph is not a classifier (exactly one input and exactly one output of
        rank 2, ``(batch, classes)``), or its weights are not all finite or not all in the file.
    """

    path: str
    threads: int = 0

    def __post_init__(self):
        self.session = self._session()
        self._check_graph()
        self._check_weights()
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(inp.shape[1:])
        self.output_names = [o.name for o in self.session.get_outputs()]
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata: Dict[str, str] = dict(meta)

    def _check_graph(self) -> None:
        """Refuse a graph that is not one input -> one ``(batch, classes)`` output."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise CorruptModelError(f'{self.path} is not a classifier: it has {len(inputs)} inputs and {len(outputs)} '
                                    f'outputs ({", ".join(o.name for o in outputs)}), expected 1 and 1')
        shape = outputs[0].shape
        if shape is None or len(shape) != 2 or (isinstance(shape[1], int) and shape[1] < 2):
            raise CorruptModelError(f'{self.path} is not a classifier: its output {outputs[0].name!r} has shape '
                                    f'{shape}, expected (batch, classes)')

    def _check_weights(self) -> None:
        """Refuse a graph whose floating-point weights (initializers, constants, in subgraphs too) hold NaN or
        infinity, or that keeps weights in external files: such a file is not a model anyone exported."""
        import onnx  # loads in about a second; read only once a session was created
        from onnx import numpy_helper
        try:
            proto = onnx.load(self.path, load_external_data=False)
        except Exception as exc:  # protobuf raises its own untyped errors
            raise CorruptModelError(f'onnx cannot read {self.path}: {exc}') from None
        bad = []
        for tensor in _weights(proto.graph):
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                raise CorruptModelError(f'{self.path} keeps the weight {tensor.name!r} in an external file; '
                                        'refused (an exported classifier holds its weights)')
            if tensor.data_type in _FLOAT_TYPES and not np.isfinite(numpy_helper.to_array(tensor)).all():
                bad.append(tensor.name or '(unnamed constant)')
        if bad:
            raise CorruptModelError(f'{self.path} holds non-finite weights ({", ".join(bad[:3])}'
                                    f'{f" and {len(bad) - 3} more" if len(bad) > 3 else ""}); refused')

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
        """``x`` as float32 if it has the model's input shape and only finite values."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != tuple(self.input_shape):
            raise InputShapeError(f'{self.path} expects inputs of shape (batch, {", ".join(map(str, self.input_shape))}),'
                                  f' got {x.shape}')
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise InputValueError(f'{self.path}: inputs hold {bad} NaN or infinite values; a classifier cannot be '
                                  'scored on them')
        return x

    def _run(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input_name: batch})[0]
        if out.ndim != 2 or out.shape[0] != len(batch):
            raise CorruptModelError(f'{self.path} returned shape {out.shape} for a batch of {len(batch)}, '
                                    'expected (batch, classes)')
        return out

    def logits(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Raw outputs for ``x`` (float32, batch first), shape ``(len(x), classes)``."""
        x = self._check(x)
        outs = [self._run(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
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
                x: Optional[np.ndarray] = None) -> Dict[str, object]:
        """Median and p90 wall time (ms) of one run on a batch of exactly ``batch_size`` rows, after warm-up.

        Parameters
        ----------
        batch_size
            Rows per run, >= 1.
        warmup, repeats
            Runs before timing, and timed runs.
        x
            Rows to run (default: uniform random inputs). Fewer than ``batch_size`` rows are repeated
            (tiled) up to ``batch_size``; more are cut to it.

        Returns
        -------
        dict
            ``batch_size`` (the rows really run), ``rows_given`` (distinct rows of ``x``, or ``None``),
            ``tiled`` (whether rows were repeated to fill the batch), ``median_ms``, ``p90_ms``.
        """
        batch = self._latency_batch(batch_size, x)
        feed = {self.input_name: batch}
        for _ in range(warmup):
            self.session.run(None, feed)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            self.session.run(None, feed)
            times.append((time.perf_counter() - t) * 1e3)
        rows = None if x is None else len(x)
        return {'batch_size': len(batch), 'rows_given': rows, 'tiled': rows is not None and rows < batch_size,
                'median_ms': float(np.median(times)), 'p90_ms': float(np.percentile(times, 90))}

    def _latency_batch(self, batch_size: int, x: Optional[np.ndarray]) -> np.ndarray:
        """``batch_size`` rows: random ones, or the rows of ``x`` cut or tiled (repeated in order) to that count."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f'batch_size must be an integer >= 1, got {batch_size!r}')
        if x is None:
            return np.random.default_rng(0).random((batch_size,) + tuple(self.input_shape), dtype=np.float32)
        x = self._check(x)
        if len(x) == 0:
            raise InputShapeError(f'{self.path}: latency needs at least one input row, got shape {x.shape}')
        return np.resize(x, (batch_size,) + x.shape[1:]) if len(x) < batch_size else x[:batch_size]

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
