"""Channel-consistent structured pruning: mask BatchNorm channels together with the convolution that feeds them.

A structured pruner (L1, L2, FPGM) zeroes whole output channels of a convolution, but the BatchNorm after it
still adds its shift ``bias - running_mean * weight / sqrt(running_var + eps)`` to that dead channel. NNI's
ModelSpeedup removes the channel, shift included, so the sped-up model differs from the masked one
(``bn_drift`` in ``export.json``). Masking the BatchNorm's ``weight`` and ``bias`` with the same channel mask
makes its output exactly zero on dead channels whatever the running statistics hold (``0 * x_hat + 0``), so
the masked model and the sped-up model compute the same function by construction.

A channel is dead only when *every* convolution of its NNI channel-dependency group masks it (convolutions
whose outputs meet in a residual add, :func:`channel_groups`): that is when ModelSpeedup can remove it.

Two forms:

- :func:`apply_channel_masks` for a plain model and NNI masks (zeroes the BatchNorm parameters in place);
- :func:`install_channel_masks` during training: a forward hook on every BatchNorm multiplies its output by
  the channel mask its group's NNI wrappers hold *now* (identical to masking ``weight`` and ``bias``, and
  gradients to dead channels are zero); :meth:`ChannelMaskHandle.remove` bakes the last masks into the
  BatchNorm parameters and removes the hooks.

:class:`~nni_bap.BAPPruner` and :class:`~nni_bap.AdversarialPruner` install these hooks themselves for the length
of ``compress`` when their base pruner is a channel pruner (:func:`channel_masks_for`); with NNI's own scheduled
pruners (``AGPPruner``) install them yourself::

    with install_channel_masks(model):        # after the pruner is built; bakes the zeros in on exit
        _, masks = AGPPruner(L1NormPruner(model, config_list, evaluator=evaluator), 10, 5).compress(max_steps, None)
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Set

import torch
from torch import Tensor, nn

from .compat import CALL_FUNCTION_REDUCE, CALL_METHOD_REDUCE, symbolic_trace

__all__ = ['ChannelMaskHandle', 'apply_channel_masks', 'batchnorm_sources', 'channel_groups', 'channel_masks_for',
           'dead_channels', 'install_channel_masks', 'is_channel_pruner', 'wrapper_masks']

_logger = logging.getLogger(__name__)
Masks = Dict[str, Dict[str, Optional[Tensor]]]
_BN = nn.modules.batchnorm._BatchNorm
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _trace(model: nn.Module) -> torch.fx.GraphModule:
    return symbolic_trace(model)


def batchnorm_sources(model: nn.Module, graph: Optional[torch.fx.GraphModule] = None) -> Dict[str, str]:
    """BatchNorm module name -> name of the conv / linear layer whose output it normalises directly.

    Found in the ``torch.fx`` graph: a BatchNorm whose input is the output of a conv or linear module
    with as many output channels as the BatchNorm has features. Other BatchNorms are not listed.
    """
    graph = graph if graph is not None else _trace(model)
    modules = dict(model.named_modules())
    out = {}
    for node in graph.graph.nodes:
        if node.op != 'call_module' or not isinstance(modules.get(node.target), _BN) or not node.args:
            continue
        src = node.args[0]
        layer = modules.get(src.target) if isinstance(src, torch.fx.Node) and src.op == 'call_module' else None
        if isinstance(layer, _LAYERS) and layer.weight.shape[0] == modules[node.target].num_features:
            out[node.target] = src.target
    return out


def channel_groups(model: nn.Module, graph: Optional[torch.fx.GraphModule] = None) -> List[Set[str]]:
    """Output-channel dependency groups: layers whose output channels meet index by index in an add, sub or mul.

    Each input of such an operation is traced back, through channel-preserving modules and functions
    (BatchNorm, activations, dropout, pooling, nested adds), to the conv / linear layers that produce its
    channels. Chains of residual adds are followed, which NNI's ``build_channel_dependency`` misses
    without shape propagation (it stops at every ``add``: in a ResNet with two blocks per stage the second
    block's ``conv2`` is left out of the group). A source that is no such layer (e.g. the model's input)
    appears as ``'<node name>'``: it has no mask, so it keeps every channel of its group alive.
    """
    graph = graph if graph is not None else _trace(model)
    modules = dict(model.named_modules())
    memo: Dict[torch.fx.Node, frozenset] = {}
    parent: Dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            a = parent[a]
        return a

    for node in graph.graph.nodes:
        if _is_reduce(node):
            names = sorted(set().union(*[_sources(a, modules, memo) for a in node.all_input_nodes]))
            for other in names[1:]:
                parent[find(other)] = find(names[0])
    groups: Dict[str, Set[str]] = {}
    for name in list(parent):
        groups.setdefault(find(name), set()).add(name)
    return [g for g in groups.values() if len(g) > 1]


def _is_reduce(node: torch.fx.Node) -> bool:
    return ((node.op == 'call_function' and node.target in CALL_FUNCTION_REDUCE)
            or (node.op == 'call_method' and node.target in CALL_METHOD_REDUCE))


_PASS_MODULES = (_BN, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardtanh,
                 nn.Sigmoid, nn.Tanh, nn.Dropout, nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_PASS_FUNCTIONS = {torch.relu, torch.nn.functional.relu, torch.sigmoid, torch.tanh, torch.nn.functional.dropout}
_PASS_METHODS = {'relu', 'relu_', 'sigmoid', 'tanh', 'contiguous', 'clone'}


def _sources(node: torch.fx.Node, modules: Dict[str, nn.Module], memo: Dict) -> frozenset:
    """Names of the layers whose output channels ``node``'s channels are (``'<name>'`` for any other origin)."""
    if node in memo:
        return memo[node]
    found = frozenset({f'<{node.name}>'})
    module = modules.get(node.target) if node.op == 'call_module' else None
    if isinstance(module, _LAYERS):
        found = frozenset({node.target})
    elif node.all_input_nodes and (isinstance(module, _PASS_MODULES)
                                   or (node.op == 'call_function' and node.target in _PASS_FUNCTIONS)
                                   or (node.op == 'call_method' and node.target in _PASS_METHODS)):
        found = _sources(node.all_input_nodes[0], modules, memo)
    elif _is_reduce(node):
        found = frozenset().union(*[_sources(a, modules, memo) for a in node.all_input_nodes])
    memo[node] = found
    return found


def _kept(mask: Optional[Tensor], channels: int) -> Tensor:
    """Boolean ``(channels,)``: output channels a weight mask keeps (no mask: all)."""
    if mask is None:
        return torch.ones(channels, dtype=torch.bool)
    return (mask.detach().reshape(mask.shape[0], -1) != 0).any(1).cpu()


def dead_channels(weight_masks: Dict[str, Optional[Tensor]], sources: Dict[str, str],
                  groups: List[Set[str]]) -> Dict[str, Tensor]:
    """BatchNorm name -> boolean mask of its *dead* channels: masked by every member of its source's group.

    Parameters
    ----------
    weight_masks
        Layer name -> its weight mask (``None``: unmasked). Layers absent are unmasked.
    sources
        :func:`batchnorm_sources`.
    groups
        :func:`channel_groups`; a layer in no group is its own group.
    """
    group_of = {name: g for g in groups for name in g}
    dead = {}
    for bn, layer in sources.items():
        if weight_masks.get(layer) is None:
            continue
        channels = weight_masks[layer].shape[0]
        kept = torch.zeros(channels, dtype=torch.bool)
        for member in group_of.get(layer, {layer}):
            mask = weight_masks.get(member)
            if mask is None or mask.shape[0] != channels:  # an unmasked member keeps every channel
                kept[:] = True
                break
            kept |= _kept(mask, channels)
        dead[bn] = ~kept
    return dead


@torch.no_grad()
def _zero_batchnorm(bn: _BN, dead: Tensor) -> None:
    if bn.weight is not None:
        bn.weight[dead.to(bn.weight.device)] = 0.0
        bn.bias[dead.to(bn.bias.device)] = 0.0


def apply_channel_masks(model: nn.Module, masks: Masks) -> Dict[str, int]:
    """Zero, in place, ``weight`` and ``bias`` of the BatchNorm channels after channels the masks remove.

    Parameters
    ----------
    model
        A plain model (its conv weights may or may not have the masks applied already).
    masks
        NNI masks, ``{layer: {'weight': mask, ...}}``.

    Returns
    -------
    dict
        BatchNorm name -> number of channels zeroed.
    """
    graph = _trace(model)
    dead = dead_channels({k: v.get('weight') for k, v in masks.items()}, batchnorm_sources(model, graph),
                         channel_groups(model, graph))
    modules = dict(model.named_modules())
    for name, d in dead.items():
        _zero_batchnorm(modules[name], d)
    return {name: int(d.sum()) for name, d in dead.items()}


def wrapper_masks(model: nn.Module, names: Optional[Set[str]] = None) -> Dict[str, Optional[Tensor]]:
    """Layer name -> the weight mask its NNI wrapper holds now (``None``: a mask not computed yet); only
    wrapped layers (of ``names``, when given) are listed."""
    out = {}
    pairs = model.named_modules() if names is None else ((n, model.get_submodule(n)) for n in names)
    for name, module in pairs:
        wrapper = getattr(module, '_nni_wrapper', None)
        space = getattr(wrapper, 'pruning_target_spaces', {}).get('weight') if wrapper is not None else None
        if space is not None:
            out[name] = space.mask
    return out


class ChannelMaskHandle:
    """Forward hooks that mask BatchNorm outputs with their group's current channel mask.

    Made by :func:`install_channel_masks`. :attr:`dead` holds, per BatchNorm, the dead channels of its last
    forward pass.
    """

    def __init__(self, model: nn.Module, read_masks: Callable[[Set[str]], Dict[str, Optional[Tensor]]]):
        self.model = model
        self.read_masks = read_masks
        graph = _trace(model)
        self.sources = batchnorm_sources(model, graph)
        self.groups = channel_groups(model, graph)
        self._group_of = {name: g for g in self.groups for name in g}
        self.dead: Dict[str, Tensor] = {}
        modules = dict(model.named_modules())
        self._hooks = [modules[bn].register_forward_hook(self._hook(bn)) for bn in self.sources]

    def current(self, bn: Optional[str] = None) -> Dict[str, Tensor]:
        """Dead channels now, of one BatchNorm or of all, from the masks ``read_masks`` returns."""
        names = [bn] if bn is not None else list(self.sources)
        layers = {m for b in names for m in self._group_of.get(self.sources[b], {self.sources[b]})}
        return dead_channels(self.read_masks(layers), {b: self.sources[b] for b in names}, self.groups)

    def _hook(self, bn: str):
        def hook(module: nn.Module, inputs, output: Tensor):
            dead = self.current(bn).get(bn)
            if dead is None:
                self.dead.pop(bn, None)
                return None
            self.dead[bn] = dead
            if not bool(dead.any()):
                return None
            keep = (~dead).to(output.device, output.dtype)
            return output * keep.view(1, -1, *([1] * (output.dim() - 2)))
        return hook

    def remove(self, bake: bool = True) -> Dict[str, int]:
        """Remove the hooks; with ``bake``, first zero the dead channels' BatchNorm ``weight`` and ``bias``.

        The masks are read once more (the wrappers' final masks); where none can be read (wrappers already
        removed) the dead channels of the last forward pass are used. Returns BatchNorm name -> channels
        zeroed.
        """
        counts: Dict[str, int] = {}
        if bake:
            dead = {**self.dead, **self.current()}
            modules = dict(self.model.named_modules())
            for name, d in dead.items():
                _zero_batchnorm(modules[name], d)
                counts[name] = int(d.sum())
        for h in self._hooks:
            h.remove()
        self._hooks = []
        _logger.debug('channel masks removed; BatchNorm channels zeroed: %s', counts)
        return counts

    def __enter__(self) -> 'ChannelMaskHandle':
        return self

    def __exit__(self, *exc) -> None:
        self.remove(bake=exc[0] is None)


def install_channel_masks(model: nn.Module, masks: Optional[Masks] = None) -> ChannelMaskHandle:
    """Mask every BatchNorm after a pruned conv with that channel's current mask, during training.

    Parameters
    ----------
    model
        The model being pruned: wrapped by an NNI pruner (install after the pruner, scheduled or not, is
        built; the hooks read each wrapper's mask at every forward pass, so masks that grow during a
        schedule are followed), or a plain model.
    masks
        Fixed NNI masks for a plain model being fine-tuned; ``None``: read the NNI wrappers' masks.

    Returns
    -------
    ChannelMaskHandle
        Call ``handle.remove()`` before ``finalize(pruner)`` (it bakes the zeros into the BatchNorm
        parameters); also a context manager.
    """
    if masks is None:
        return ChannelMaskHandle(model, lambda names: wrapper_masks(model, names))
    fixed = {k: v.get('weight') for k, v in masks.items()}
    return ChannelMaskHandle(model, lambda names: fixed)


def is_channel_pruner(pruner) -> bool:
    """Whether an NNI pruner (base or scheduled) removes whole output channels: some weight it prunes has NNI's
    ``'out_channel'`` granularity (``L1NormPruner``, ``L2NormPruner``, ``FPGMPruner``, ``TaylorPruner``...)."""
    for targets in (getattr(pruner, '_target_spaces', None) or {}).values():
        space = targets.get('weight')
        if space is not None and getattr(space, 'granularity', None) == 'out_channel':
            return True
    return False


def channel_masks_for(pruner, model: nn.Module) -> Optional[ChannelMaskHandle]:
    """:func:`install_channel_masks` on ``model`` (wrapped by ``pruner``) when ``pruner`` is a channel pruner and a
    BatchNorm normalises a pruned layer's output; ``None`` otherwise.

    A model ``torch.fx`` cannot trace is left unmasked, with a warning: its export then measures ``bn_drift``
    and refuses a drifting model.
    """
    if not is_channel_pruner(pruner) or not any(isinstance(m, _BN) for m in model.modules()):
        return None
    try:
        handle = install_channel_masks(model)
    except Exception as exc:  # noqa: BLE001 (torch.fx raises many kinds of errors on untraceable code)
        _logger.warning('BatchNorm is not masked with the pruned channels (torch.fx cannot trace the model: %s: %s); '
                        'the export will refuse the model if the channels\' BatchNorm shifts change its logits',
                        type(exc).__name__, exc)
        return None
    if not handle.sources:
        handle.remove(bake=False)
        return None
    _logger.debug('BatchNorm channels masked with the channel masks of %s', sorted(handle.sources.values()))
    return handle
