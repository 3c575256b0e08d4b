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
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..attacks.base import check_number, flat_norm, shrink_to
from ..errors import ConfigError

__all__ = ['Cutoff', 'Mean', 'batch_mean', 'check_cutoff', 'check_scale', 'cutoff_scale', 'l2_to_rms', 'resolve_cutoff',
           'rms_to_l2']

Cutoff = Union[float, str, None]
#: A reduction of per-sample norms to their mean (the batch's, or the global batch's under torchrun).
Mean = Callable[[Tensor], Tensor]


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
    raise ConfigError(f"cutoff must be a finite number >= 0, 'adaptive' or None (no cut), got {cutoff!r}")


def check_scale(scale: float) -> float:
    """The scale (rho) as a float if it is a finite number ``> 0``, else ``ValueError``."""
    return check_number('scale', scale, strict=True)


def batch_mean(values: Tensor) -> Tensor:
    """The plain mean of ``values`` (0-d), 0 when there are none: the default reduction of :func:`resolve_cutoff`."""
    return values.mean() if values.numel() else values.new_zeros(())


def resolve_cutoff(norms: Tensor, cutoff: Cutoff, mean: Optional[Mean] = None) -> Tensor:
    """The cutoff for a batch, a 0-d tensor.

    ``'adaptive'`` is the ``mean`` of the norms that are positive: samples that needed no perturbation
    (misclassified already, ``eta = 0``) do not pull the radius down; with no positive norm it is 0.
    ``mean`` is :func:`batch_mean` by default; the pruners pass the mean over every process's batch under
    ``torchrun`` (:func:`nni_bap.utils.distributed.global_mean`: N processes with batches of B then give what
    one process gives with N x B). A number is itself, ``None`` is infinity (no cut).
    """
    cutoff = check_cutoff(cutoff)
    if cutoff is None:
        return torch.tensor(math.inf, dtype=norms.dtype, device=norms.device)
    if cutoff == 'adaptive':
        return (mean or batch_mean)(norms[norms > 0])
    return torch.tensor(cutoff, dtype=norms.dtype, device=norms.device)


def cutoff_scale(eta: Tensor, cutoff: Cutoff = 'adaptive', scale: float = 1.0, norm: str = 'l2',
                 mean: Optional[Mean] = None) -> Tuple[Tensor, Tensor]:
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
    mean
        The reduction behind the adaptive cutoff (:func:`resolve_cutoff`).

    Returns
    -------
    tuple
        The new perturbations and the cutoff used (a 0-d tensor).
    """
    scale = check_scale(scale)
    cut = resolve_cutoff(flat_norm(eta, norm), cutoff, mean)
    return shrink_to(eta, cut, norm, scale), cut
