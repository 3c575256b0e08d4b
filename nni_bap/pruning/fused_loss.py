"""One forward pass for the clean and the adversarial half of a batch, for training loops of one's own.

NNI's ``patch_loss`` hands the pruners a clean loss it already computed, so they cannot fuse the two passes;
a custom loop can (measured 0.91-0.95 of two passes on LeNet-5; NOTES.md).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Tuple

import torch
from torch import Tensor, nn

__all__ = ['fused_adversarial_loss', 'per_part_batch_norm']


def _per_chunk(forward, parts: int):
    def chunked(inp: Tensor) -> Tensor:
        return torch.cat([forward(c) for c in inp.chunk(parts)])
    return chunked


@contextlib.contextmanager
def per_part_batch_norm(model: nn.Module, parts: int) -> Iterator[None]:
    """Within the block, every BatchNorm of ``model`` in training mode normalises each of ``parts`` equal
    chunks of its batch with that chunk's own statistics, updating its running statistics chunk after
    chunk: a forward pass over ``cat([a, b])`` then behaves exactly like one over ``a`` followed by one over
    ``b``. A forward already replaced on the instance (NNI's wrappers) is kept and called per chunk.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    saved = [(m, m.__dict__.get('forward')) for m in bns]
    for m in bns:
        m.forward = _per_chunk(m.forward, parts)
    try:
        yield
    finally:
        for m, old in saved:
            if old is None:
                del m.forward
            else:
                m.forward = old


def fused_adversarial_loss(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor,
                           adv_weight: float = 0.5) -> Tuple[Tensor, Tensor]:
    """``(1 - w) * CE(model(x), y) + w * CE(model(x_adv), y)`` in one forward pass over ``cat([x, x_adv])``.

    For training loops of one's own (NNI's ``patch_loss`` hands the pruners a clean loss already computed,
    so they cannot fuse). BatchNorm layers in training mode see the clean and the adversarial half
    separately (:func:`per_part_batch_norm`), so loss, gradients and running statistics equal two passes.

    Returns
    -------
    tuple
        The loss and the logits of both halves, ``(2n, classes)``.
    """
    with per_part_batch_norm(model, 2):
        logits = model(torch.cat([x, x_adv]))
    n = x.shape[0]
    clean = nn.functional.cross_entropy(logits[:n], y)
    adv = nn.functional.cross_entropy(logits[n:], y)
    return (1 - adv_weight) * clean + adv_weight * adv, logits
