"""The layers a latency table prices: every convolution and linear layer of a model, its shape, and which channel
units (:class:`~nni_bap.pruning.align.ChannelUnit`) set its output and its input width.

A layer's input width follows the unit whose layer produced it: the ``torch.fx`` graph is walked back from the
layer through channel-preserving operations (BatchNorm, activations, pooling, dropout, flatten, residual adds) to
the first convolution or linear layer. After a flatten a linear layer reads ``channels x positions`` features, so
its input shrinks by the same factor as its producer's channels.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from ..pruning.align import ChannelUnit
from ..pruning.compat import symbolic_trace

__all__ = ['LayerShape', 'layer_flops', 'layer_shapes', 'layer_widths']

_LAYERS = (nn.Conv2d, nn.Linear)
_PASS_MODULES = (nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU,
                 nn.Hardswish, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Dropout, nn.Identity, nn.MaxPool2d, nn.AvgPool2d,
                 nn.AdaptiveAvgPool2d, nn.Flatten)
_PASS_FUNCTIONS = {torch.relu, nn.functional.relu, torch.sigmoid, torch.tanh, torch.flatten, nn.functional.dropout,
                   nn.functional.max_pool2d, nn.functional.avg_pool2d, nn.functional.adaptive_avg_pool2d,
                   torch.add, operator.add, operator.iadd, torch.mul, operator.mul, torch.sub, operator.sub}
_PASS_METHODS = {'relu', 'relu_', 'sigmoid', 'tanh', 'flatten', 'view', 'reshape', 'contiguous', 'clone', 'add',
                 'add_', 'mul', 'sub'}


@dataclass(frozen=True)
class LayerShape:
    """One convolution (``kind='conv'``) or linear layer as the dense model has it, at batch 1.

    ``in_unit`` / ``out_unit`` name the channel units that set its input / output width (``None``: fixed);
    ``in_per_channel`` is how many input features one channel of ``in_unit`` gives (positions after a flatten).
    """

    name: str
    kind: str
    in_channels: int
    out_channels: int
    in_size: Tuple[int, ...] = ()
    out_size: Tuple[int, ...] = ()
    kernel: Tuple[int, ...] = ()
    stride: Tuple[int, ...] = ()
    padding: Tuple[int, ...] = ()
    dilation: Tuple[int, ...] = ()
    bias: bool = True
    in_unit: Optional[str] = None
    out_unit: Optional[str] = None
    in_per_channel: int = 1


def _producer(node: torch.fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    """The conv / linear layer whose output channels ``node`` carries (``None``: the model input or unknown)."""
    todo, seen = [node], set()
    while todo:
        n = todo.pop(0)
        if n in seen:
            continue
        seen.add(n)
        module = modules.get(n.target) if n.op == 'call_module' else None
        if isinstance(module, _LAYERS):
            return str(n.target)
        if (isinstance(module, _PASS_MODULES) or (n.op == 'call_function' and n.target in _PASS_FUNCTIONS)
                or (n.op == 'call_method' and n.target in _PASS_METHODS)):
            todo += list(n.all_input_nodes)
    return None


def _record_sizes(model: nn.Module, input_shape: Sequence[int]) -> Dict[str, Tuple[tuple, tuple]]:
    sizes, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, _LAYERS):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: sizes.__setitem__(name, (tuple(inp[0].shape[2:]),
                                                                          tuple(out.shape[2:])))))
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return sizes


def _shape(name: str, m: nn.Module, sizes, in_unit, out_unit, per: int) -> LayerShape:
    if isinstance(m, nn.Linear):
        return LayerShape(name, 'linear', m.in_features, m.out_features, bias=m.bias is not None, in_unit=in_unit,
                          out_unit=out_unit, in_per_channel=per)
    if m.groups != 1 or isinstance(m.padding, str):
        raise ConfigError(f'{name}: grouped convolutions and padding={m.padding!r} are not priced by the latency table')
    return LayerShape(name, 'conv', m.in_channels, m.out_channels, sizes[name][0], sizes[name][1],
                      tuple(m.kernel_size), tuple(m.stride), tuple(m.padding), tuple(m.dilation), m.bias is not None,
                      in_unit, out_unit, per)


def layer_shapes(model: nn.Module, input_shape: Sequence[int], units: Sequence[ChannelUnit]) -> List[LayerShape]:
    """Every ``Conv2d`` and ``Linear`` of ``model`` (inputs of ``input_shape``, without the batch) with the units
    (those not left alone) that set its widths."""
    modules = dict(model.named_modules())
    unit_of = {layer: u for u in units if not u.left_alone for layer in u.layers}
    sizes = _record_sizes(model, input_shape)
    out = []
    for node in symbolic_trace(model).graph.nodes:
        m = modules.get(node.target) if node.op == 'call_module' else None
        if not isinstance(m, _LAYERS):
            continue
        producer = _producer(node.args[0], modules)
        unit = unit_of.get(producer)
        per = 1
        if unit is not None:
            per = (m.in_features if isinstance(m, nn.Linear) else m.in_channels) // unit.channels
        own = unit_of.get(str(node.target))
        out.append(_shape(str(node.target), m, sizes, unit.name if unit else None, own.name if own else None, per))
    return out


def layer_widths(layer: LayerShape, widths: Mapping[str, int]) -> Tuple[int, int]:
    """(input, output) width of ``layer`` when the units have ``widths`` (units absent: full width)."""
    cin = widths[layer.in_unit] * layer.in_per_channel if layer.in_unit in widths else layer.in_channels
    cout = widths[layer.out_unit] if layer.out_unit in widths else layer.out_channels
    return int(cin), int(cout)


def layer_flops(layer: LayerShape, cin: int, cout: int) -> int:
    """FLOPs (2 x multiply-adds, batch 1) of ``layer`` at widths ``cin`` -> ``cout``, as
    :func:`~nni_bap.export.efficiency.onnx_efficiency` counts them."""
    if layer.kind == 'linear':
        return 2 * cin * cout
    positions = 1
    for s in layer.out_size:
        positions *= s
    kernel = 1
    for k in layer.kernel:
        kernel *= k
    return 2 * positions * cout * cin * kernel
