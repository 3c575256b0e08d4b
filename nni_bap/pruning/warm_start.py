"""Warm starts for BAP's DeepFool: each sample's last perturbation, kept by dataset index across epochs."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ['WarmStarts', 'check_index']


class WarmStarts:
    """Each sample's last DeepFool perturbation, by dataset index, for warm starts across epochs.

    Grows to the largest index seen; rows never written are zero (a cold start). Memory: one input's
    worth of floats per sample of the dataset (MNIST: 60000 x 784 floats, 188 MB).
    """

    def __init__(self):
        self.eta: Optional[Tensor] = None

    def _fit(self, index: Tensor, like: Tensor) -> None:
        size = int(index.max()) + 1
        if self.eta is None:
            self.eta = like.new_zeros((size, *like.shape[1:]))
        elif size > self.eta.shape[0]:
            self.eta = torch.cat([self.eta, self.eta.new_zeros((size - self.eta.shape[0], *like.shape[1:]))])

    def get(self, index: Tensor, like: Tensor) -> Tensor:
        """The stored perturbations of ``index`` (zeros for samples not seen yet)."""
        self._fit(index, like)
        return self.eta[index]

    def put(self, index: Tensor, eta: Tensor) -> None:
        """Remember ``eta`` for the samples ``index``."""
        self._fit(index, eta)
        self.eta[index] = eta.detach()


def check_index(index, batch_size: int) -> Tensor:
    """``index`` if it is a 1-D integer tensor with one dataset index (>= 0) per sample, else ``TypeError``."""
    ok = isinstance(index, Tensor) and index.dim() == 1 and not index.is_floating_point() and index.dtype != torch.bool
    if not ok or index.shape[0] != batch_size or (index.numel() and int(index.min()) < 0):
        raise TypeError('warm_start needs batches of (inputs, labels, index) (or dicts with key index), index a '
                        f'1-D integer tensor of {batch_size} dataset indices >= 0; got {index!r:.80}')
    return index
