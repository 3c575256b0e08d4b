"""Scheduled pruners that mix adversarial examples into NNI's gradual pruning.

:class:`BAPPruner` (blind adversarial pruning) and :class:`AdversarialPruner` (uniform budget)
share everything but the AE generator. Both wrap a base NNI pruner exactly like NNI's
``AGPPruner`` and train through the evaluator's ``patch_loss`` hook. With a channel pruner as base pruner they mask
the BatchNorm channels after every removed channel during ``compress`` (:mod:`nni_bap.pruning.channel_mask`), so the
model that trains is the model that ModelSpeedup and the ONNX export produce (``bn_drift`` 0). A progress bar
follows the pruning steps (by default when stderr is a terminal).
"""
from __future__ import annotations

import inspect
import logging
from typing import Any, Dict, List, Optional, Tuple

from torch import Tensor, nn
from tqdm.auto import tqdm

from ..attacks.base import check_count, check_inputs
from ..utils.distributed import is_main
from .channel_mask import ChannelMaskHandle, channel_masks_for
from .compat import (
    ComboPruner,
    Evaluator,
    Pruner,
    check_evaluator_placement,
    check_optimizers_have_params,
)
from .generators import BlindGenerator, UniformGenerator
from .schedule import SCHEDULES, schedule_ratio
from .sparsity import current_sparsity
from .training import default_progress, shows_progress

__all__ = ['AdversarialPruner', 'BAPPruner', 'pruner_class']

_logger = logging.getLogger(__name__)


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
    """Gradual pruning whose training loss is ``(1 - w) * clean + w * CE(model(x_adv), y)``.

    A subclass names its AE generator (:attr:`generator_class`); its keyword settings are the generator's
    (the class's signature shows them, with their defaults), plus ``schedule``.
    """

    generator_class: type = None
    #: ``compress`` masks BatchNorm channels itself with channel pruners (callers need not install the hooks).
    masks_batchnorm = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.generator_class is not None:
            cls.__signature__ = _signature(cls.generator_class)

    def __init__(self, pruner: Pruner, interval_steps: int, total_times: int, evaluator: Evaluator | None = None,
                 *, schedule: str = 'agp', progress: Optional[bool] = None, **settings):
        check_evaluator_placement(pruner, evaluator)
        SCHEDULES.entry(schedule)
        self.generator = self.generator_class(**settings)
        interval_steps = check_count('interval_steps', interval_steps)
        total_times = check_count('total_times', total_times)
        super().__init__(pruner, interval_steps, total_times, evaluator=None)
        self.schedule = schedule
        self.progress = progress
        self.adv_weight, self.log_interval = self.generator.adv_weight, self.generator.log_interval
        self.statistics: List[Dict[str, float]] = []
        self.channel_masks: Optional[ChannelMaskHandle] = None
        self._bar = None

    def compress(self, max_steps: Optional[int], max_epochs: Optional[int]):
        """Train while pruning for ``max_steps`` steps (or ``max_epochs`` epochs); ``(model, masks)`` like NNI's.

        With a channel pruner, BatchNorm channels after removed channels are masked while training and their
        ``weight`` and ``bias`` zeroed at the end (:func:`~nni_bap.pruning.channel_mask.channel_masks_for`). A
        progress bar shows the steps, the sparsity and the AE error unless ``progress`` is false (default: when
        stderr is a terminal and the evaluator's own training loop shows none).
        """
        self.channel_masks = channel_masks_for(self, self.bound_model)
        self._bar = self._open_bar(max_steps)
        done = False
        try:
            result = super().compress(max_steps, max_epochs)
            done = True
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            if self.channel_masks is not None:
                self.channel_masks.remove(bake=done)
        return result

    def _open_bar(self, max_steps: Optional[int]):
        show = default_progress(self.progress) and is_main()
        if self.progress is None and shows_progress(getattr(self.evaluator, 'training_func', None)):
            show = False  # make_evaluator's loop has its own bar
        return tqdm(total=max_steps, desc=type(self).__name__, leave=False) if show else None

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
        self._advance_bar(stats)
        if self.log_interval and len(self.statistics) % self.log_interval == 0:
            _logger.info('%s step %d: sparsity %.3f, AE error %.3f, AE norm %.3f (cut %.3f)', type(self).__name__,
                         len(self.statistics), stats['sparsity'], stats['ae_error'],
                         stats.get('norm_mean', stats['cut_norm_mean']), stats['cut_norm_mean'])
        return (1 - self.adv_weight) * loss + self.adv_weight * adv_loss

    def _advance_bar(self, stats: Dict[str, float]) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        if len(self.statistics) % 10 == 0:
            self._bar.set_postfix(sparsity=f"{stats['sparsity']:.3f}", ae_error=f"{stats['ae_error']:.3f}")

    def summary(self) -> Dict[str, float]:
        """Mean of every per-step statistic over the whole run, plus the final sparsity."""
        if not self.statistics:
            return {}
        keys = self.statistics[0].keys()
        out = {k: sum(s[k] for s in self.statistics) / len(self.statistics) for k in keys if k != 'step'}
        out['steps'] = float(len(self.statistics))
        out['final_sparsity'] = self.statistics[-1]['sparsity']
        return out


def _signature(generator_class: type) -> inspect.Signature:
    """``(pruner, interval_steps, total_times, evaluator=None, *, schedule='agp', <the generator's settings>)``."""
    base = inspect.signature(_AdversarialComboPruner.__init__).parameters.values()
    own = [p for p in base if p.name != 'self' and p.kind is not p.VAR_KEYWORD]
    settings = [p.replace(kind=p.KEYWORD_ONLY) for p in inspect.signature(generator_class).parameters.values()]
    return inspect.Signature(own + settings)


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
        :mod:`nni_bap.pruning.compat`).
    schedule
        ``'agp'`` (polynomial decay) or ``'linear'`` (:data:`~nni_bap.pruning.registry.SCHEDULES`).
    progress
        A progress bar over the pruning steps (sparsity, AE error): ``None`` (default) shows it when stderr is a
        terminal, unless the evaluator comes from :func:`~nni_bap.pruning.training.make_evaluator` (whose training
        loop shows its own); ``False`` never, ``True`` always.
    cutoff, scale, attack_steps, overshoot, candidates, adv_weight, norm, clip_min, clip_max, log_interval, warm_start
        The method's settings, with their defaults: see :class:`~nni_bap.pruning.generators.BlindGenerator`.
        ``cutoff`` (``'adaptive'``, a number or ``None``) is the cut radius, ``scale`` rho.

    Raises
    ------
    ConfigError
        At construction, for any setting out of range (naming it); ``ValueError`` at a training step, for a
        batch outside ``[clip_min, clip_max]`` or not finite.
    TypeError
        At a training step with ``warm_start``, for a batch without dataset indices.

    Notes
    -----
    With a channel pruner (``L1NormPruner``, ``L2NormPruner``, ``FPGMPruner``, ``TaylorPruner``) and BatchNorm
    after a pruned layer, ``compress`` masks those BatchNorm channels with their convolution's channel mask while it
    trains and zeroes their ``weight`` and ``bias`` at the end, so that ``finalize`` + export gives ``bn_drift`` 0
    (:mod:`nni_bap.pruning.channel_mask`).

    Attributes
    ----------
    generator
        The :class:`~nni_bap.pruning.generators.BlindGenerator` built from the settings.
    channel_masks
        The :class:`~nni_bap.pruning.channel_mask.ChannelMaskHandle` of the last ``compress`` (``None`` when no
        BatchNorm was masked); its ``dead`` holds, per BatchNorm, the channels zeroed.
    statistics
        One dict per training step: AE norms before (``norm_*``) and after (``cut_norm_*``) the
        cut, ``cutoff`` (the radius used), ``perturbed`` (fraction of samples DeepFool had to move:
        the adaptive cutoff is the mean norm over these), ``ae_error`` (fraction of AEs misclassified),
        ``sparsity``, losses.
    """

    generator_class = BlindGenerator


class AdversarialPruner(_AdversarialComboPruner):
    """Adversarial pruning with one prescribed (uniform) budget: FGSM-RS, PGD... at a fixed ``eps``.

    The paper's baseline; identical to :class:`BAPPruner` except for the AE generator.

    Parameters
    ----------
    pruner, interval_steps, total_times, evaluator, schedule, progress
        As in :class:`BAPPruner` (BatchNorm channels are masked with channel pruners there too).
    attack, eps, steps, alpha, random_start, adv_weight, clip_min, clip_max, log_interval
        The method's settings, with their defaults: see :class:`~nni_bap.pruning.generators.UniformGenerator`.
        ``attack='fgsm'`` with ``random_start=True`` (default) is FGSM-RS (Wong et al. 2020: uniform start in
        the ball, one step of ``1.25 * eps``, projected); ``random_start=False`` is plain FGSM.
    """

    generator_class = UniformGenerator


def pruner_class(generator_class: type) -> type:
    """The scheduled pruner that trains on ``generator_class``'s AEs (a subclass of the adversarial combo pruner)."""
    found = [c for c in _AdversarialComboPruner.__subclasses__() if c.generator_class is generator_class]
    if len(found) != 1:
        raise LookupError(f'{len(found)} scheduled pruners train on {generator_class.__name__}')
    return found[0]
