"""Latency-targeted channel plans: per-layer widths that keep the most channel importance within an onnxruntime
latency budget, written as a plain NNI config_list.

:func:`make_plan` ties the pieces together: the channel units a config_list selects
(:func:`~nni_bap.pruning.align.channel_units`, aligned to the block), each unit's candidate widths (multiples
of the block, never below one block), a latency table of every layer at the width pairs those allow
(:mod:`.latency`, measured once and reusable), the dense model's channel importance (:mod:`.importance`) and the
allocation (:mod:`.allocate`). :func:`verify_plan` builds the planned model (the dense weights, the most important
channels kept, sped up and exported) and measures it beside the dense model, so that the prediction is checked
where it is made.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from ..export.onnx_export import export_onnx
from ..export.runtime import OnnxClassifier
from ..pruning.align import ChannelUnit, channel_units, unit_entries
from ..utils.timing import alternating_ms
from .allocate import allocate
from .importance import kept_importance, layer_scores, unit_scores
from .latency import LatencyTable, measure_table, table_key
from .layers import LayerShape, layer_flops, layer_shapes, layer_widths

__all__ = ['Plan', 'latency_table', 'make_plan', 'plan_masks', 'plan_units', 'unit_options', 'verify_plan']

_logger = logging.getLogger(__name__)


@dataclass
class Plan:
    """A channel plan and what it predicts (``*_ms`` keyed by batch size; widths keyed by unit and by layer)."""

    speedup: float
    batches: List[int]
    align: int
    importance: str
    widths: Dict[str, int]
    channels: Dict[str, int]
    unit_layers: Dict[str, List[str]]
    layer_widths: Dict[str, Dict[str, int]]
    config_list: List[Dict]
    dense_ms: Dict[int, float]
    predicted_ms: Dict[int, float]
    flops: Dict[str, int]
    importance_kept: float
    left_alone: Dict[str, str]
    search: str
    table: Dict[str, object] = field(default_factory=dict)
    measured: Dict[str, object] = field(default_factory=dict)

    @property
    def predicted_speedup(self) -> Dict[int, float]:
        return {b: self.dense_ms[b] / self.predicted_ms[b] for b in self.batches}

    def to_dict(self) -> Dict:
        d = asdict(self)
        d['predicted_speedup'] = self.predicted_speedup
        d['flops_ratio'] = self.flops['dense'] / self.flops['plan']
        return d


def unit_options(unit: ChannelUnit, align: int) -> List[int]:
    """Widths a unit may take: the multiples of ``align`` up to its channels, and all its channels."""
    return sorted({*range(align, unit.channels + 1, align), unit.channels})


def plan_units(model: nn.Module, config_list: Sequence[Mapping],
               align: int) -> Tuple[List[ChannelUnit], Dict[str, str]]:
    """The units a plan may narrow, and the others with why they are left alone."""
    units = channel_units(model, [dict(e) for e in config_list], align)
    return [u for u in units if not u.left_alone], {u.name: u.left_alone for u in units if u.left_alone}


def _predictor(table: LatencyTable, layers: Sequence[LayerShape], batches: Sequence[int]):
    return lambda widths: {b: table.predict_ms(layers, widths, b) for b in batches}


def _flops(layers: Sequence[LayerShape], widths: Mapping[str, int]) -> int:
    return sum(layer_flops(layer, *layer_widths(layer, widths)) for layer in layers)


def _problem(model: nn.Module, config_list, input_shape, align: int):
    units, left_alone = plan_units(model, config_list, align)
    if not units:
        raise ConfigError(f'no layer can be narrowed in multiples of {align} channels: {left_alone}')
    layers = layer_shapes(model, input_shape, units)
    return units, left_alone, layers, {u.name: unit_options(u, align) for u in units}


def latency_table(model: nn.Module, config_list: Sequence[Mapping], input_shape: Sequence[int], dense_onnx: str,
                  batches: Sequence[int] = (1, 64), threads: int = 1, align: int = 16,
                  cached: Optional[LatencyTable] = None) -> LatencyTable:
    """The latency table a plan of ``model`` needs: ``cached`` when it was measured for the same layers, width
    options, batch sizes, threads, CPU and onnxruntime (:meth:`LatencyTable.fits`), else measured now."""
    _, _, layers, options = _problem(model, config_list, input_shape, align)
    key = table_key(layers, options, threads, align)
    if cached is not None and cached.fits(key, batches):
        return cached
    if cached is not None:
        _logger.info('latency table not reused: measured for another model, CPU, onnxruntime or setting')
    table = measure_table(layers, options, dense_onnx, batches, threads, align)
    table.context['key'] = key
    return table


def make_plan(model: nn.Module, config_list: Sequence[Mapping], input_shape: Sequence[int], speedup: float,
              dense_onnx: str, batches: Sequence[int] = (1, 64), threads: int = 1, align: int = 16,
              importance: str = 'l1', data=None, table: Optional[LatencyTable] = None) -> Tuple[Plan, LatencyTable]:
    """Per-layer widths for ``speedup`` x the dense model's onnxruntime latency at every batch size in ``batches``.

    Parameters
    ----------
    model
        The dense (trained) model; ``dense_onnx`` is it exported (:func:`~nni_bap.export.export_onnx`).
    config_list
        NNI's config_list naming the layers that may be pruned (its ``sparse_ratio`` values are not used;
        ``exclude`` entries translated).
    align
        The block: widths are multiples of it, never below one block (:mod:`nni_bap.pruning.align`).
    importance
        :data:`~nni_bap.deploy.importance.IMPORTANCE` name (``taylor`` needs ``data``: ``(x, y)`` batches).
    table
        A latency table measured before for this model, CPU and settings; measured here when ``None``.

    Raises
    ------
    ConfigError
        ``speedup`` <= 1, nothing prunable, or no aligned plan predicted to reach ``speedup`` (the message gives
        the fastest).
    """
    if not speedup > 1:
        raise ConfigError(f'speedup must be > 1, got {speedup}')
    units, left_alone, layers, options = _problem(model, config_list, input_shape, align)
    table = latency_table(model, config_list, input_shape, dense_onnx, batches, threads, align, table)
    scores = unit_scores(units, layer_scores(model, [n for u in units for n in u.layers], importance, data))
    budget = {b: table.dense_ms[b] / speedup for b in batches}
    found = allocate(options, lambda u, w: kept_importance(scores[u], w), _predictor(table, layers, batches), budget)
    if not found.feasible:
        best = ', '.join(f'{table.dense_ms[b] / found.latency_ms[b]:.2f}x at batch {b}' for b in batches)
        raise ConfigError(f'no plan with widths in multiples of {align} channels is predicted to reach {speedup:g}x: '
                          f'the fastest (every prunable layer at one block) reaches {best}; ask for less, or name the '
                          f'layers left alone in op_names ({"; ".join(left_alone.values()) or "none"})')
    return _plan(found, units, layers, table, scores, left_alone, speedup, batches, align, importance), table


def _plan(found, units, layers, table, scores, left_alone, speedup, batches, align, importance) -> Plan:
    dense = {u.name: u.channels for u in units}
    entries = [e for u in units for e in unit_entries(u, found.widths[u.name])]
    total = sum(kept_importance(scores[u.name], u.channels) for u in units)
    per_layer = {}
    for layer in layers:
        cin, cout = layer_widths(layer, found.widths)
        per_layer[layer.name] = {'in': cin, 'out': cout, 'dense_in': layer.in_channels, 'dense_out': layer.out_channels}
    table_info = {'entries': len(table.entries), **{k: v for k, v in table.context.items() if k != 'cpu'}}
    plan = Plan(float(speedup), [int(b) for b in batches], int(align), importance, dict(found.widths), dense,
                {u.name: list(u.layers) for u in units}, per_layer, entries,
                {b: table.dense_ms[b] for b in batches}, dict(found.latency_ms),
                {'dense': _flops(layers, dense), 'plan': _flops(layers, found.widths)},
                found.importance / total, left_alone, found.method, table_info)
    _logger.info('plan for %gx: %s; predicted %s; FLOPs ratio %.2f; importance kept %.3f', speedup,
                 ', '.join(f'{u} {w}/{dense[u]}' for u, w in plan.widths.items()),
                 ', '.join(f'b{b} {plan.predicted_speedup[b]:.2f}x' for b in batches),
                 plan.flops['dense'] / plan.flops['plan'], plan.importance_kept)
    return plan


def plan_masks(model: nn.Module, plan: Plan, importance: str = 'l1', data=None) -> Dict[str, Dict[str, torch.Tensor]]:
    """NNI masks that keep, in every unit, its ``plan.widths`` most important channels (the dense model's scores)."""
    modules = dict(model.named_modules())
    scores = layer_scores(model, [n for layers in plan.unit_layers.values() for n in layers], importance, data)
    masks = {}
    for unit, layers in plan.unit_layers.items():
        keep = torch.zeros(plan.channels[unit], dtype=torch.bool)
        keep[torch.topk(sum(scores[n] for n in layers), plan.widths[unit]).indices] = True
        for n in layers:
            w = modules[n].weight
            masks[n] = {'weight': keep.view(-1, *[1] * (w.dim() - 1)).expand_as(w).to(w.dtype).clone()}
    return masks


def verify_plan(model: nn.Module, plan: Plan, dense_onnx: str, plan_onnx: str, dummy_input: torch.Tensor,
                threads: int = 1, rounds: Mapping[int, int] = None, data=None) -> Dict[str, object]:
    """Build the planned model from the dense one, export it to ``plan_onnx`` and measure it beside the dense model
    (alternating runs, medians).

    The table predicts a quiet machine; a measurement on a shared one is slower by whatever else runs. So the
    prediction is compared through the dense model measured alongside: ``predicted_plan_ms_scaled`` is the dense
    latency measured now divided by the predicted speed-up, and ``error`` its relative difference to the plan's
    measured latency (= measured speed-up / predicted speed-up - 1)."""
    start = time.perf_counter()
    # built for its latency alone: the dense weights under the plan's masks, not fine-tuned, so removing the channels
    # may move its outputs through BatchNorm shifts (bn_drift is not a question here)
    res = export_onnx(model, plan_onnx, dummy_input, masks=plan_masks(model, plan, plan.importance, data),
                      max_bn_drift=float('inf'))
    clfs = {'dense': OnnxClassifier(dense_onnx, threads=threads), 'plan': OnnxClassifier(plan_onnx, threads=threads)}
    out: Dict[str, object] = {'onnx_flops': res.efficiency['flops'], 'batches': {}}
    for b in plan.batches:
        x = clfs['dense']._latency_batch(int(b), dummy_input.numpy())
        ms = alternating_ms({k: (lambda c=c: c.session.run(None, {c.input_name: x})) for k, c in clfs.items()},
                            (rounds or {}).get(b, 300 if b == 1 else 30))
        measured = ms['dense'] / ms['plan']
        out['batches'][b] = {'dense_ms': ms['dense'], 'plan_ms': ms['plan'], 'measured_speedup': measured,
                             'predicted_speedup': plan.predicted_speedup[b],
                             'predicted_plan_ms_scaled': ms['dense'] / plan.predicted_speedup[b],
                             'error': measured / plan.predicted_speedup[b] - 1}
    out['seconds'] = time.perf_counter() - start
    return out
