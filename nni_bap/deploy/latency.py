"""Per-layer onnxruntime latency tables, and the whole-model latency they predict.

Every convolution and linear layer is priced at each pair of candidate (input, output) widths it can take: a
one-layer ONNX model (the convolution with the dense layer's kernel, stride, padding and input size, followed
by a ReLU that onnxruntime fuses into it) is run in onnxruntime with the session settings a deployment uses, and
its kernel times are read from onnxruntime's profiler. The layout reorders onnxruntime puts around a lone
blocked convolution are not counted (inside a model whose widths are multiples of the block there are none),
except the output reorder of a layer whose width is not a multiple of the block: inside the model that one
happens too. A model's latency is predicted as the measured dense latency minus what each layer saves:
``dense_ms - sum(t(layer, dense widths) - t(layer, planned widths))``, so everything the layers do not change
(pooling, the session's own overhead) is taken as measured.

Each time is the minimum over repeated runs (after warm-up) of onnxruntime's own kernel timings: on a shared
machine other processes only ever add time, so the minimum is the steadiest estimate of a kernel's cost. The dense
model is timed the same way (the sum of its kernels' minima plus the session's overhead, measured at batch 1),
or by its wall-time minimum, whichever is lower (:func:`measure_dense_ms`). A lone layer's kernel minimum matched
the same kernel's inside the model within a few percent (small ResNet, batch 1 and 64).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..export.cpu import cpu_features
from ..utils.atomic import sha256_json
from .layers import LayerShape, layer_widths

__all__ = ['LatencyTable', 'ProfiledSession', 'layer_model', 'measure_dense_ms', 'measure_layer_us', 'measure_table',
           'run_in_rounds', 'session_overhead_ms', 'table_context', 'table_key']

_logger = logging.getLogger(__name__)
Key = Tuple[str, int, int, int]  # layer, input width, output width, batch


def layer_model(layer: LayerShape, cin: int, cout: int, seed: int = 0) -> bytes:
    """A one-layer ONNX model (opset 17, dynamic batch) of ``layer`` at widths ``cin`` -> ``cout``, serialised."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    if layer.kind == 'linear':
        w = rng.standard_normal((cout, cin)).astype(np.float32)
        nodes = [helper.make_node('Gemm', ['x', 'w', 'b'], ['y'], transB=1)]
        x_shape, y_shape = ['n', cin], ['n', cout]
    else:
        w = rng.standard_normal((cout, cin, *layer.kernel)).astype(np.float32)
        nodes = [helper.make_node('Conv', ['x', 'w', 'b'], ['c'], kernel_shape=list(layer.kernel),
                                  strides=list(layer.stride), pads=list(layer.padding) * 2,
                                  dilations=list(layer.dilation)),
                 helper.make_node('Relu', ['c'], ['y'])]
        x_shape, y_shape = ['n', cin, *layer.in_size], ['n', cout, *layer.out_size]
    bias = rng.standard_normal(cout).astype(np.float32)
    inits = [numpy_helper.from_array(w, 'w'), numpy_helper.from_array(bias, 'b')]
    graph = helper.make_graph(nodes, layer.name, [helper.make_tensor_value_info('x', TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, y_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)], producer_name='nni-bap')
    model.ir_version = 8
    return model.SerializeToString()


def _session(model, threads: int, profile: Optional[str] = None):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile
    return ort.InferenceSession(model, sess_options=opts, providers=['CPUExecutionProvider'])


def _random_feed(session, batch: int) -> Dict[str, np.ndarray]:
    inp = session.get_inputs()[0]
    shape = [batch] + [int(d) for d in inp.shape[1:]]
    return {inp.name: np.random.default_rng(0).random(shape, dtype=np.float32)}


def _kernel_mins(events: Iterable[Dict]) -> Dict[Tuple[str, str], float]:
    """(op, node) -> minimum kernel time (us) in onnxruntime profiler events."""
    times: Dict[Tuple[str, str], float] = {}
    for e in events:
        if e.get('cat') == 'Node' and e['name'].endswith('_kernel_time'):
            key = (e['args'].get('op_name', '?'), e['name'][:-len('_kernel_time')])
            times[key] = min(times.get(key, float('inf')), float(e['dur']))
    return times


def _profile_mins(model, batch: int, threads: int, repeats: int, warmup: int,
                  budget_s: float = 0.0) -> Dict[Tuple[str, str], float]:
    """Minimum kernel times of ``model`` over ``repeats`` profiled runs, or more (up to 20x) while they fit
    ``budget_s``."""
    with tempfile.TemporaryDirectory(prefix='bap-latency-') as folder:
        session = _session(model, threads, os.path.join(folder, 'p'))
        feed = _random_feed(session, batch)
        start = time.perf_counter()
        for _ in range(max(warmup, 1)):
            session.run(None, feed)
        once = (time.perf_counter() - start) / max(warmup, 1)
        for _ in range(max(repeats, min(int(budget_s / max(once, 1e-6)), 20 * repeats))):
            session.run(None, feed)
        with open(session.end_profiling()) as fh:
            return _kernel_mins(json.load(fh))


def measure_layer_us(layer: LayerShape, cin: int, cout: int, batch: int, threads: int = 1, block: int = 16,
                     repeats: int = 30, warmup: int = 3, budget_s: float = 0.1) -> float:
    """Kernel time (us, minimum over at least ``repeats`` runs, more while they fit ``budget_s``) of ``layer`` at
    ``cin`` -> ``cout`` for a batch of ``batch``, layout reorders left out except the output reorder of a width
    that is not a multiple of ``block``."""
    mins = _profile_mins(layer_model(layer, cin, cout), batch, threads, repeats, warmup, budget_s)
    return _layer_us(mins, layer, cout, block)


def _wall_min_ms(onnx_path: str, batch: int, threads: int, repeats: int, warmup: int) -> float:
    session = _session(onnx_path, threads)
    feed = _random_feed(session, batch)
    for _ in range(warmup):
        session.run(None, feed)
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def session_overhead_ms(onnx_path: str, threads: int = 1, repeats: int = 300, warmup: int = 10) -> float:
    """What a run costs beyond its kernels (ms): the whole model's wall time minus its kernel times, both minima over
    ``repeats`` runs at batch 1 (short runs, whose minima hold on a shared machine); never negative."""
    kernels = sum(_profile_mins(onnx_path, 1, threads, repeats, warmup).values()) / 1e3
    return max(0.0, _wall_min_ms(onnx_path, 1, threads, repeats, warmup) - kernels)


def measure_dense_ms(onnx_path: str, batch: int, threads: int = 1, repeats: int = 30, warmup: int = 3,
                     overhead_ms: float = 0.0) -> float:
    """The whole model's latency (ms) at ``batch``: the lower of its wall-time minimum and the sum of its kernels'
    minima plus ``overhead_ms`` (:func:`session_overhead_ms`). Both only err upwards: other processes stretch long
    runs (no run of a 12 ms model came out below 24 ms on 2 shared cores while its kernels summed to 13 ms), and
    the profiler adds a little to every short kernel."""
    kernels = sum(_profile_mins(onnx_path, batch, threads, repeats, warmup).values()) / 1e3
    return min(_wall_min_ms(onnx_path, batch, threads, repeats, warmup), kernels + overhead_ms)


def table_context(threads: int, block: int) -> Dict[str, object]:
    """What a table is valid for: the CPU, onnxruntime's version, threads, the block the widths align to."""
    import onnxruntime
    return {'cpu': cpu_features(), 'onnxruntime': onnxruntime.__version__, 'threads': int(threads), 'block': int(block)}


def table_key(layers: Sequence[LayerShape], options: Mapping[str, Sequence[int]], threads: int,
              block: int) -> str:
    """Hash of what a table prices: the layers' shapes, the units' width options, threads, block."""
    return sha256_json({'layers': [asdict(layer) for layer in layers],
                        'options': {k: list(v) for k, v in options.items()}, 'threads': int(threads),
                        'block': int(block)})


@dataclass
class LatencyTable:
    """Measured kernel times per (layer, input width, output width, batch) and whole-model dense latencies.

    Attributes
    ----------
    entries
        ``{(layer, cin, cout, batch): microseconds}``.
    dense_ms
        ``{batch: milliseconds}``: the dense ONNX model's latency (:func:`measure_dense_ms`).
    context
        :func:`table_context` plus ``key`` (:func:`table_key`), ``overhead_ms`` and ``seconds`` (time spent
        measuring).
    """

    entries: Dict[Key, float] = field(default_factory=dict)
    dense_ms: Dict[int, float] = field(default_factory=dict)
    context: Dict[str, object] = field(default_factory=dict)

    def predict_ms(self, layers: Sequence[LayerShape], widths: Mapping[str, int], batch: int) -> float:
        """Whole-model latency (ms) at ``batch`` with the units at ``widths``: the dense latency minus what each
        layer saves."""
        saved = 0.0
        for layer in layers:
            dense = (layer.in_channels, layer.out_channels)
            now = layer_widths(layer, widths)
            if now != dense:
                saved += self.entries[(layer.name, *dense, batch)] - self.entries[(layer.name, *now, batch)]
        return self.dense_ms[batch] - saved / 1e3

    def fits(self, key: str, batches: Sequence[int]) -> bool:
        """Whether this table was measured for ``key`` (:func:`table_key`) at every batch size of ``batches``, on this
        CPU with this onnxruntime."""
        import onnxruntime
        return (self.context.get('key') == key and all(int(b) in self.dense_ms for b in batches)
                and self.context.get('cpu') == cpu_features()
                and self.context.get('onnxruntime') == onnxruntime.__version__)

    def to_dict(self) -> Dict:
        return {'context': self.context, 'dense_ms': {str(b): v for b, v in self.dense_ms.items()},
                'entries': [[*k, v] for k, v in sorted(self.entries.items())]}

    @classmethod
    def from_dict(cls, d: Mapping) -> 'LatencyTable':
        return cls({(str(n), int(a), int(b), int(c)): float(v) for n, a, b, c, v in d['entries']},
                   {int(b): float(v) for b, v in d['dense_ms'].items()}, dict(d['context']))


def _pairs(layer: LayerShape, options: Mapping[str, Sequence[int]]) -> List[Tuple[int, int]]:
    """Every (input, output) width ``layer`` can take when each unit takes one of its ``options``."""
    ins = ([w * layer.in_per_channel for w in options[layer.in_unit]] if layer.in_unit in options
           else [layer.in_channels])
    outs = list(options[layer.out_unit]) if layer.out_unit in options else [layer.out_channels]
    return [(a, b) for a in ins for b in outs]


class ProfiledSession:
    """An onnxruntime session on a fixed random batch, run in bursts: the minimum wall time of a run and, when
    ``profile`` (the profiler adds its own time to every run), its kernels' minima over every run."""

    def __init__(self, model, batch: int, threads: int, folder: str, name: str, warmup: int = 3,
                 profile: bool = True):
        self.session = _session(model, threads, os.path.join(folder, name) if profile else None)
        self.feed = _random_feed(self.session, batch)
        self.wall = float('inf')
        for _ in range(warmup):
            self.run(1)
        self.once = self.wall

    def run(self, times: int) -> None:
        for _ in range(times):
            start = time.perf_counter()
            self.session.run(None, self.feed)
            self.wall = min(self.wall, time.perf_counter() - start)

    def mins(self) -> Dict[Tuple[str, str], float]:
        with open(self.session.end_profiling()) as fh:
            return _kernel_mins(json.load(fh))


def _layer_us(mins: Dict[Tuple[str, str], float], layer: LayerShape, cout: int, block: int) -> float:
    keep_output_reorder = layer.kind == 'conv' and cout % block != 0
    return float(sum(t for (op, _), t in mins.items()
                     if not op.startswith('Reorder') or (op == 'ReorderOutput' and keep_output_reorder)))


def run_in_rounds(sessions: Sequence[ProfiledSession], rounds: int, repeats: int, budget_s: float) -> None:
    """Run every session in ``rounds`` rounds, a burst each (at least ``repeats`` runs in all, more while the
    session's share of ``budget_s`` allows): every entry sees the machine's quiet and busy moments alike."""
    for _ in range(rounds):
        for p in sessions:
            runs = max(repeats, min(int(budget_s / max(p.once, 1e-6)), 20 * repeats))
            p.run(max(1, runs // rounds))


def _measure_batch(table: 'LatencyTable', layers, options, dense_onnx: str, batch: int, threads: int, block: int,
                   repeats: int, budget_s: float, rounds: int, folder: str) -> Tuple[float, float]:
    """Every layer's width pairs in rotation with the dense model (profiled, and plain for its wall time), layer by
    layer; the dense model's (wall minimum, kernel-minima sum) in ms over all its runs."""
    dense = ProfiledSession(dense_onnx, batch, threads, folder, f'dense{batch}')
    plain = ProfiledSession(dense_onnx, batch, threads, folder, '', profile=False)
    for i, layer in enumerate(layers):
        pairs = _pairs(layer, options)
        sessions = [ProfiledSession(layer_model(layer, cin, cout), batch, threads, folder, f'{i}_{cin}_{cout}_{batch}')
                    for cin, cout in pairs]
        run_in_rounds(sessions + [dense, plain], rounds, repeats, budget_s)
        for (cin, cout), p in zip(pairs, sessions):
            table.entries[(layer.name, cin, cout, batch)] = _layer_us(p.mins(), layer, cout, block)
    return plain.wall * 1e3, sum(dense.mins().values()) / 1e3


def measure_table(layers: Sequence[LayerShape], options: Mapping[str, Sequence[int]], dense_onnx: str,
                  batches: Sequence[int], threads: int = 1, block: int = 16, repeats: int = 30,
                  budget_s: float = 0.1, rounds: int = 5) -> LatencyTable:
    """Measure every layer at every width pair its units' ``options`` allow, and the dense model, per batch size.

    A layer's width pairs and the dense model are run in ``rounds`` alternating rounds (kernel minima over all
    runs): on a shared machine every entry of a layer, whose differences are the savings, and the dense model meet
    the same conditions. Each entry takes at least ``repeats`` runs, more while they fit ``budget_s`` seconds.
    """
    start = time.perf_counter()
    table = LatencyTable(context=table_context(threads, block))
    measured = {}
    with tempfile.TemporaryDirectory(prefix='bap-latency-') as folder:
        for b in sorted(map(int, batches)):
            measured[b] = _measure_batch(table, layers, options, dense_onnx, b, threads, block, repeats, budget_s,
                                         rounds, folder)
    # batch 1: short runs, whose wall minimum holds on a shared machine
    overhead = (max(0.0, measured[1][0] - measured[1][1]) if 1 in measured
                else session_overhead_ms(dense_onnx, threads))
    table.context['overhead_ms'] = overhead
    for b in measured:
        table.dense_ms[b] = min(measured[b][0], measured[b][1] + overhead)
    table.context['seconds'] = time.perf_counter() - start
    _logger.info('latency table: %d entries at batch %s in %.1f s', len(table.entries),
                 ', '.join(map(str, batches)), table.context['seconds'])
    return table
