"""The cutoff-scale strategy of blind adversarial training (BAT).

Norm convention
---------------
Norms here are plain per-example norms over all input elements: the Euclidean
norm for ``'l2'`` and the largest absolute value for ``'linf'``. The official
BAT code measures L2 as a root mean square per element, ``sqrt(mean(eta**2))``;
for an input of ``d`` elements ``rms = l2 / sqrt(d)`` (MNIST: ``d = 784``, so an
RMS of 0.1 is an L2 norm of 2.8). :func:`rms_to_l2` converts.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Sequence, Tuple, Union

import torch
from torch import Tensor

from .attacks.base import check_number, flat_norm
from .distributed import global_mean

__all__ = ['Cutoff', 'check_cutoff', 'check_scale', 'cutoff_scale', 'l2_to_rms', 'resolve_cutoff', 'rms_to_l2']

Cutoff = Union[float, str, None]


def rms_to_l2(rms: float, input_shape: Sequence[int]) -> float:
    """Convert an RMS-per-element budget into an L2 norm for inputs of ``input_shape`` (no batch axis)."""
    return float(rms) * math.sqrt(math.prod(input_shape))


def l2_to_rms(l2: float, input_shape: Sequence[int]) -> float:
    """Inverse of :func:`rms_to_l2`."""
    return float(l2) / math.sqrt(math.prod(input_shape))


def check_cutoff(cutoff: Cutoff) -> Cutoff:
    """The cutoff setting if valid: a finite number ``>= 0`` (as a float), ``'adaptive'`` or ``None`` (no cut).

    Raises
    ------
    ValueError
        Naming the setting and the value.
    """
    if cutoff is None or (isinstance(cutoff, str) and cutoff == 'adaptive'):
        return cutoff
    if isinstance(cutoff, Real) and not isinstance(cutoff, bool) and math.isfinite(cutoff) and cutoff >= 0:
        return float(cutoff)
    raise ValueError(f"cutoff must be a finite number >= 0, 'adaptive' or None (no cut), got {cutoff!r}")


def check_scale(scale: float) -> float:
    """The scale (rho) as a float if it is a finite number ``> 0``, else ``ValueError``."""
    return check_number('scale', scale, strict=True)


def resolve_cutoff(norms: Tensor, cutoff: Cutoff) -> Tensor:
    """The cutoff for a batch, a 0-d tensor.

    ``'adaptive'`` is the mean of the norms that are positive: samples that needed no perturbation
    (misclassified already, ``eta = 0``) do not pull the radius down; with no positive norm it is 0.
    Under ``torch.distributed`` the mean is over every process's batch (N processes with batches of B
    give what one process gives with N x B).
    A number is itself, ``None`` is infinity (no cut).
    """
    cutoff = check_cutoff(cutoff)
    if cutoff is None:
        return torch.tensor(math.inf, dtype=norms.dtype, device=norms.device)
    if cutoff == 'adaptive':  # over every process's batch under torchrun
        return global_mean(norms[norms > 0])
    return torch.tensor(cutoff, dtype=norms.dtype, device=norms.device)


def cutoff_scale(eta: Tensor, cutoff: Cutoff = 'adaptive', scale: float = 1.0,
                 norm: str = 'l2') -> Tuple[Tensor, Tensor]:
    """Cut every perturbation whose norm exceeds the cutoff down to the cutoff, then multiply by ``scale``.

    Cutting keeps the direction: the perturbation is multiplied by ``cutoff / ||eta||``
    (for ``'linf'`` too, so its largest element becomes the cutoff).

    Parameters
    ----------
    eta
        Per-example perturbations, batch first (e.g. DeepFool's minimal ones).
    cutoff
        A number, ``'adaptive'`` (mean of the positive norms, see :func:`resolve_cutoff`) or ``None``
        (no cut); see :func:`check_cutoff`.
    scale
        Rho, > 0: ``< 1`` stays just before the boundary, ``> 1`` goes just past it.
    norm
        ``'l2'`` or ``'linf'``.

    Returns
    -------
    tuple
        The new perturbations and the cutoff used (a 0-d tensor).
    """
    scale = check_scale(scale)
    norms = flat_norm(eta, norm)
    cut = resolve_cutoff(norms, cutoff)
    factor = torch.where(norms > cut, cut / norms.clamp_min(1e-12), torch.ones_like(norms)) * scale
    return eta * factor.view(-1, *([1] * (eta.dim() - 1))), cut
