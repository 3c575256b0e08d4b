"""Base class shared by every attack: settings checks, input-range check, mode save/restore, clamping, logits.

Attacks take gradients with :func:`torch.autograd.grad` with respect to the
*inputs only*, so the parameters' ``.grad`` fields are never touched, and the
model is put in eval mode for the duration of the call and restored after it.
A model wrapped by NNI (masks applied in its forward) is attacked as it is.

Every setting is checked once, in the constructor (``check_*`` below, shared with the generators
and pruners); every batch is checked by :func:`check_inputs` before it is attacked.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Callable, Optional, Tuple, TypeVar

import torch
from torch import Tensor, nn

from ..errors import ConfigError, DataError

__all__ = ['Attack', 'MinNormAttack', 'check_candidates', 'check_clip', 'check_count', 'check_inputs', 'check_norm', 'check_number',
           'flat_norm', 'project_l2', 'shrink_factor', 'shrink_to']

NORMS = ('l2', 'linf')
INPUT_TOLERANCE = 1e-6
T = TypeVar('T')


def check_number(name: str, value, low: float = 0.0, strict: bool = False) -> float:
    """``value`` as a float if it is a finite real number ``>= low`` (``> low`` if ``strict``), else ``ValueError``."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= low if strict else value < low):
        raise ConfigError(f"{name} must be a finite number {'>' if strict else '>='} {low:g}, got {value!r}")
    return float(value)


def check_count(name: str, value, low: int = 1) -> int:
    """``value`` as an int if it is an integer ``>= low``, else ``ValueError``."""
    if not isinstance(value, Integral) or isinstance(value, bool) or value < low:
        raise ConfigError(f'{name} must be an integer >= {low}, got {value!r}')
    return int(value)


def check_norm(norm: str) -> str:
    """``norm`` if it is ``'l2'`` or ``'linf'``, else ``ValueError``."""
    if norm not in NORMS:
        raise ConfigError(f"norm must be 'l2' or 'linf', got {norm!r}")
    return norm


def check_candidates(candidates: Optional[int]) -> Optional[int]:
    """DeepFool's top-k: ``None`` (all classes) or an integer ``>= 2`` (the label and at least one rival)."""
    if candidates is None:
        return None
    if not isinstance(candidates, Integral) or isinstance(candidates, bool) or candidates < 2:
        raise ConfigError(f'candidates must be None or an integer >= 2 (the label and at least one rival), '
                         f'got {candidates!r}')
    return int(candidates)


def check_clip(clip_min: Optional[float], clip_max: Optional[float]) -> Tuple[Optional[float], Optional[float]]:
    """The valid input range: each bound ``None`` or a finite number, ``clip_min < clip_max`` when both are set."""
    lo = None if clip_min is None else check_number('clip_min', clip_min, low=-math.inf)
    hi = None if clip_max is None else check_number('clip_max', clip_max, low=-math.inf)
    if lo is not None and hi is not None and not lo < hi:
        raise ConfigError(f'clip_min must be below clip_max, got clip_min={clip_min!r}, clip_max={clip_max!r}')
    return lo, hi


def check_inputs(x: Tensor, clip_min: Optional[float], clip_max: Optional[float]) -> None:
    """Refuse a batch that is not finite or lies outside ``[clip_min, clip_max]`` (``None``: that side unchecked).

    Attacks clamp their results into the valid range, so inputs normalised outside it (e.g. by mean
    and std) would be silently clipped: the attack would change the data, not just perturb it.
    """
    if x.numel() == 0:
        return
    if not bool(torch.isfinite(x).all()):
        raise DataError('inputs hold NaN or infinite values; attacks need finite inputs')
    lo, hi = float(x.min()), float(x.max())
    below = clip_min is not None and lo < clip_min - INPUT_TOLERANCE
    above = clip_max is not None and hi > clip_max + INPUT_TOLERANCE
    if below or above:
        raise DataError(f"inputs lie in [{lo:.4g}, {hi:.4g}], outside the attack's valid range "
                         f'[{_bound(clip_min, -math.inf):g}, {_bound(clip_max, math.inf):g}]; put normalisation '
                         'inside the model (e.g. a first layer that normalises) or set clip_min/clip_max')


def _bound(value: Optional[float], default: float) -> float:
    return default if value is None else value


def flat_norm(t: Tensor, norm: str) -> Tensor:
    """Per-sample norm of ``t`` (first dimension is the batch): ``'l2'`` or ``'linf'``."""
    flat = t.reshape(t.shape[0], -1)
    if check_norm(norm) == 'l2':
        return flat.norm(p=2, dim=1)
    return flat.abs().amax(dim=1)


def shrink_factor(eta: Tensor, radius: float | Tensor, norm: str) -> Tensor:
    """Per sample, the factor that brings a norm above ``radius`` down to ``radius`` (1 for the others)."""
    norms = flat_norm(eta, norm)
    cut = torch.as_tensor(radius, dtype=norms.dtype, device=norms.device)
    return torch.where(norms > cut, cut / norms.clamp_min(1e-12), torch.ones_like(norms))


def shrink_to(eta: Tensor, radius: float | Tensor, norm: str, scale: float = 1.0) -> Tensor:
    """Scale down every sample of ``eta`` whose norm exceeds ``radius`` onto that norm, keeping its direction,
    then multiply every sample by ``scale``.

    For ``'linf'`` too the whole perturbation is scaled (its largest element becomes ``radius``), unlike a
    projection, which clips every element.
    """
    factor = shrink_factor(eta, radius, norm) * scale
    return eta * factor.view(-1, *([1] * (eta.dim() - 1)))


def project_l2(eta: Tensor, eps: float | Tensor) -> Tensor:
    """Shrink each sample of the perturbation ``eta`` into the L2 ball of radius ``eps``."""
    norms = flat_norm(eta, 'l2').clamp_min(1e-12)
    factor = torch.clamp(torch.as_tensor(eps, dtype=eta.dtype, device=eta.device) / norms, max=1.0)
    return eta * factor.view(-1, *([1] * (eta.dim() - 1)))


class Attack:
    """Base of all attacks.

    Parameters
    ----------
    model
        The classifier under attack; it returns logits.
    clip_min, clip_max
        Valid input range; inputs must lie in it (:func:`check_inputs`) and adversarial inputs are
        clamped into it. ``None`` leaves that side open.
    """

    def __init__(self, model: nn.Module, clip_min: Optional[float] = 0.0, clip_max: Optional[float] = 1.0):
        self.model = model
        self.clip_min, self.clip_max = check_clip(clip_min, clip_max)

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial inputs for ``(x, y)``: the one way in for every attack."""
        return self.guarded(self.perturb, x, y).detach()

    def guarded(self, fn: Callable[[Tensor, Tensor], T], x: Tensor, y: Tensor) -> T:
        """``fn(x, y)`` on checked, detached inputs, in eval mode with gradients on (mode restored after)."""
        check_inputs(x, self.clip_min, self.clip_max)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad():
                return fn(x.detach(), y.detach())
        finally:
            self.model.train(was_training)

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Craft the adversarial batch; the caller (:meth:`__call__`) owns checks and the model's mode."""
        raise NotImplementedError

    def clamp(self, x: Tensor) -> Tensor:
        if self.clip_min is None and self.clip_max is None:
            return x
        lo = -math.inf if self.clip_min is None else self.clip_min
        hi = math.inf if self.clip_max is None else self.clip_max
        return x.clamp(lo, hi)

    def logits(self, x: Tensor) -> Tensor:
        return self.model(x)

    def loss_grad(self, x: Tensor, y: Tensor) -> Tensor:
        """Gradient of the summed cross-entropy with respect to ``x`` (parameters' ``.grad`` untouched)."""
        x = x.detach().requires_grad_(True)
        loss = nn.functional.cross_entropy(self.logits(x), y, reduction='sum')
        (grad,) = torch.autograd.grad(loss, x)
        return grad

    def __repr__(self) -> str:
        keys = ', '.join(f'{k}={v!r}' for k, v in vars(self).items() if k != 'model')
        return f'{type(self).__name__}({keys})'


class MinNormAttack(Attack):
    """An attack that looks, per sample, for the smallest adversarial perturbation in its norm (no budget).

    The contract robustness evaluation relies on (:class:`~nni_bap.evaluation.cascade.Cascade`): the
    constructor takes ``norm``; :meth:`run` returns an object whose ``x_adv`` holds, per sample, the
    adversarial input found (the input itself where none was found). Robust accuracy at every budget then
    follows from one run.
    """

    norm: str

    def run(self, x: Tensor, y: Tensor) -> Any:  # pragma: no cover - abstract
        """Search the smallest adversarial perturbations (the caller owns checks and the model's mode)."""
        raise NotImplementedError

    def attack(self, x: Tensor, y: Tensor) -> Any:
        """:meth:`run` with the inputs checked, in eval mode (mode restored): all the attack found."""
        return self.guarded(self.run, x, y)

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        return self.run(x, y).x_adv
