"""Scheduled pruners that mix adversarial examples into NNI's gradual pruning.

:class:`BAPPruner` (blind adversarial pruning) and :class:`AdversarialPruner` (uniform budget)
share everything but the AE generator. Both wrap a base NNI pruner exactly like NNI's
``AGPPruner`` and train through the evaluator's ``patch_loss`` hook.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn

from nni.compression.base.compressor import Pruner
from nni.compression.utils import Evaluator

from .attacks.base import check_count, check_inputs, check_number
from .compat import ComboPruner, check_evaluator_placement, check_optimizers_have_params
from .cutoff import Cutoff
from .generators import BlindGenerator, UniformGenerator
from .schedule import SCHEDULES, schedule_ratio

__all__ = ['AdversarialPruner', 'BAPPruner', 'current_sparsity', 'fused_adversarial_loss', 'per_part_batch_norm']

_logger = logging.getLogger(__name__)


def current_sparsity(target_spaces) -> float:
    """Fraction of masked elements over every masked ``weight`` target of an NNI pruner."""
    zeros, total = 0, 0
    for ts in target_spaces.values():
        for name, space in ts.items():
            target = space.target
            if name != 'weight' or not isinstance(target, Tensor):
                continue
            total += target.numel()
            if space.mask is not None:
                zeros += int((space.mask == 0).sum())
    return zeros / total if total else 0.0


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


def _batch_index(batch: Any) -> Any:
    """The dataset indices of a batch ``(inputs, labels, index, ...)`` or ``{'x', 'y', 'index'}``; None if absent."""
    if isinstance(batch, (list, tuple)):
        return batch[2] if len(batch) >= 3 else None
    return batch.get('index') if isinstance(batch, dict) else None


def _split_batch(batch: Any) -> Tuple[Tensor, Tensor]:
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[0], batch[1]
    if isinstance(batch, dict) and {'x', 'y'} <= set(batch):
        return batch['x'], batch['y']
    raise TypeError('adversarial pruning needs batches of (inputs, labels, ...) or dicts with keys x and y; '
                    f'got {type(batch).__name__}')


class _AdversarialComboPruner(ComboPruner):
    """Gradual pruning whose training loss is ``(1 - w) * clean + w * CE(model(x_adv), y)``."""

    generator: Any

    def __init__(self, pruner: Pruner, interval_steps: int, total_times: int, evaluator: Evaluator | None = None,
                 *, schedule: str = 'agp', adv_weight: float = 0.5, log_interval: int = 50):
        check_evaluator_placement(pruner, evaluator)
        if schedule not in SCHEDULES:
            raise ValueError(f'unknown schedule {schedule!r}; choose one of {sorted(SCHEDULES)}')
        if check_number('adv_weight', adv_weight) > 1.0:
            raise ValueError(f'adv_weight must be in [0, 1], got {adv_weight!r}')
        interval_steps = check_count('interval_steps', interval_steps)
        total_times = check_count('total_times', total_times)
        super().__init__(pruner, interval_steps, total_times, evaluator=None)
        self.schedule = schedule
        self.adv_weight = float(adv_weight)
        self.log_interval = check_count('log_interval', log_interval, low=0)
        self.statistics: List[Dict[str, float]] = []

    def update_sparse_goals(self, current_times: int):
        self._update_sparse_goals_by_ratio(schedule_ratio(self.schedule, current_times, self.total_times,
                                                          self._initial_ratio))

    def _fuse_preprocess(self, evaluator: Evaluator) -> None:
        super()._fuse_preprocess(evaluator)
        check_optimizers_have_params(evaluator)
        self.statistics = []
        evaluator.patch_loss(self._adversarial_loss)

    def _adversarial_loss(self, loss: Tensor, batch: Any) -> Tensor:
        """The patched training loss; refuses a batch outside the generator's ``[clip_min, clip_max]``."""
        model: nn.Module = self.evaluator.model
        x, y = _split_batch(batch)
        check_inputs(x, self.generator.clip_min, self.generator.clip_max)
        if getattr(self.generator, 'warm_start', False):
            x_adv, stats = self.generator(model, x, y, index=_batch_index(batch))
        else:
            x_adv, stats = self.generator(model, x, y)
        logits = model(x_adv)
        adv_loss = nn.functional.cross_entropy(logits, y)
        stats.update(step=float(len(self.statistics) + 1), ae_error=float((logits.argmax(1) != y).float().mean()),
                     sparsity=current_sparsity(self._target_spaces), clean_loss=float(loss.detach()),
                     adv_loss=float(adv_loss.detach()))
        self.statistics.append(stats)
        if self.log_interval and len(self.statistics) % self.log_interval == 0:
            _logger.info('%s step %d: sparsity %.3f, AE error %.3f, AE norm %.3f (cut %.3f)', type(self).__name__,
                         len(self.statistics), stats['sparsity'], stats['ae_error'],
                         stats.get('norm_mean', stats['cut_norm_mean']), stats['cut_norm_mean'])
        return (1 - self.adv_weight) * loss + self.adv_weight * adv_loss

    def summary(self) -> Dict[str, float]:
        """Mean of every per-step statistic over the whole run, plus the final sparsity."""
        if not self.statistics:
            return {}
        keys = self.statistics[0].keys()
        out = {k: sum(s[k] for s in self.statistics) / len(self.statistics) for k in keys if k != 'step'}
        out['steps'] = float(len(self.statistics))
        out['final_sparsity'] = self.statistics[-1]['sparsity']
        return out


class BAPPruner(_AdversarialComboPruner):
    """Blind adversarial pruning (Xie et al., 2020, arXiv 2004.05913).

    Wraps a base NNI pruner like ``AGPPruner`` does. At every training step it crafts DeepFool
    AEs against the current masked model (eval mode, BatchNorm statistics untouched), cuts
    their norms at the cutoff, scales them by rho and trains on
    ``(1 - adv_weight) * clean_loss + adv_weight * CE(model(x_adv), y)``.

    Parameters
    ----------
    pruner
        The base pruner (``LevelPruner``, ``L1NormPruner``, ``TaylorPruner``...), built **with** the
        evaluator: ``LevelPruner(model, config_list, evaluator=evaluator)``.
    interval_steps
        Training steps between two sparsity updates.
    total_times
        Number of sparsity updates until the final sparsity.
    evaluator
        Must stay ``None``: giving it here instead of to the base pruner is refused (see
        :mod:`nni_bap.compat`).
    schedule
        ``'agp'`` (polynomial decay) or ``'linear'``.
    cutoff
        The cut radius: ``'adaptive'`` (mean DeepFool norm over the samples it had to perturb: those
        misclassified already are left out), a number >= 0, or ``None`` (no cut).
    scale
        Rho, > 0: the cut perturbation is multiplied by it.
    attack_steps
        DeepFool iterations, >= 1. The default 2 (samples that crossed drop out after their first)
        with ``candidates=2`` prices a BAP step at about 1.4 FGSM-RS steps, with robustness within
        the seeds' noise of the previous default (5 iterations, 3 candidates; ``benchmarks/bap_parity.py``).
    overshoot
        DeepFool overshoot, >= 0.
    candidates
        Classes DeepFool considers (top-k, label included); ``None`` means all. The default 2 (the
        label and its strongest rival) needs one backward pass per iteration.
    adv_weight
        Weight of the AE loss.
    norm
        ``'l2'`` or ``'linf'``: DeepFool's and the cut's norm.
    clip_min, clip_max
        Valid input range: every training batch must lie in it (normalise inside the model).
    log_interval
        Log the running statistics every this many steps (0: never).
    warm_start
        Begin each sample's DeepFool from its perturbation of the previous epoch (kept by dataset
        index). The data loader must yield ``(inputs, labels, index)`` (or dicts with ``x``, ``y``,
        ``index``); a plain ``TensorDataset`` of ``(x, y)`` cannot, and the first step says so.

    Raises
    ------
    ValueError
        At construction, for any setting out of range (naming it); at a training step, for a batch
        outside ``[clip_min, clip_max]`` or not finite.
    TypeError
        At a training step with ``warm_start``, for a batch without dataset indices.

    Attributes
    ----------
    statistics
        One dict per training step: AE norms before (``norm_*``) and after (``cut_norm_*``) the
        cut, ``cutoff`` (the radius used), ``perturbed`` (fraction of samples DeepFool had to move:
        the adaptive cutoff is the mean norm over these), ``ae_error`` (fraction of AEs misclassified),
        ``sparsity``, losses.
    """

    def __init__(self, pruner: Pruner, interval_steps: int, total_times: int, evaluator: Evaluator | None = None,
                 *, schedule: str = 'agp', cutoff: Cutoff = 'adaptive', scale: float = 1.0, attack_steps: int = 2,
                 overshoot: float = 0.02, candidates: Optional[int] = 2, adv_weight: float = 0.5,
                 norm: str = 'l2', clip_min: Optional[float] = 0.0, clip_max: Optional[float] = 1.0,
                 log_interval: int = 50, warm_start: bool = False):
        # the generator checks every setting; attack_steps is checked here so that the error names it
        steps = check_count('attack_steps', attack_steps)
        self.generator = BlindGenerator(steps=steps, overshoot=overshoot, candidates=candidates, cutoff=cutoff,
                                        scale=scale, norm=norm, clip_min=clip_min, clip_max=clip_max,
                                        warm_start=warm_start)
        super().__init__(pruner, interval_steps, total_times, evaluator, schedule=schedule,
                         adv_weight=adv_weight, log_interval=log_interval)


class AdversarialPruner(_AdversarialComboPruner):
    """Adversarial pruning with one prescribed (uniform) budget: FGSM or PGD at a fixed ``eps``.

    The paper's baseline; identical to :class:`BAPPruner` except for the AE generator.

    Parameters
    ----------
    pruner, interval_steps, total_times, evaluator, schedule, adv_weight, clip_min, clip_max, log_interval
        As in :class:`BAPPruner`.
    attack
        ``'fgsm'``, ``'pgd'`` (Linf) or ``'pgd_l2'``.
    eps
        The uniform budget, > 0.
    steps, alpha, random_start
        The attack's settings (see :class:`~nni_bap.generators.UniformGenerator`): ``steps >= 1``,
        ``alpha > 0`` or ``None``. ``attack='fgsm'`` with ``random_start=True`` (default) is FGSM-RS
        (Wong et al. 2020: uniform start in the ball, one step of ``1.25 * eps``, projected);
        ``random_start=False`` is plain FGSM.
    """

    def __init__(self, pruner: Pruner, interval_steps: int, total_times: int, evaluator: Evaluator | None = None,
                 *, attack: str = 'fgsm', eps: float = 0.1, steps: int = 10, alpha: Optional[float] = None,
                 random_start: bool = True, schedule: str = 'agp', adv_weight: float = 0.5,
                 clip_min: Optional[float] = 0.0, clip_max: Optional[float] = 1.0, log_interval: int = 50):
        self.generator = UniformGenerator(attack=attack, eps=eps, steps=steps, alpha=alpha,
                                          random_start=random_start, clip_min=clip_min, clip_max=clip_max)
        super().__init__(pruner, interval_steps, total_times, evaluator, schedule=schedule,
                         adv_weight=adv_weight, log_interval=log_interval)
