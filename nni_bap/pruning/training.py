"""Training helpers: NNI evaluators, dense training and accuracy (NNI's TorchEvaluator contract)."""
from __future__ import annotations

import math
import sys
from typing import Any, Callable, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..errors import DivergenceError
from ..utils.device import model_device, to_device
from ..utils.distributed import (
    all_mean,
    is_main,
    set_epoch,
    sync_buffers,
    train_loader,
    wrap_ddp,
)
from .compat import TorchEvaluator, nni

__all__ = ['BeginHook', 'EpochHook', 'accuracy', 'check_finite', 'check_finite_weights', 'default_progress',
           'make_evaluator', 'make_training_func', 'predict', 'shows_progress', 'train', 'training_step']


def default_progress(progress: Optional[bool]) -> bool:
    """Whether to show a progress bar: ``progress`` itself, or for ``None`` whether stderr is a terminal."""
    if progress is not None:
        return bool(progress)
    isatty = getattr(sys.stderr, 'isatty', None)
    return bool(isatty and isatty())


def shows_progress(training_func: Optional[Callable]) -> bool:
    """Whether ``training_func`` is one of :func:`make_training_func`'s showing its own progress bar."""
    return bool(getattr(training_func, 'shows_progress', False))


def check_finite(loss: torch.Tensor, step: int, desc: str) -> float:
    """The loss as a float; :class:`~nni_bap.errors.DivergenceError` naming the step when it is not finite."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise DivergenceError(f'{desc}: the loss is {value} at step {step}: training diverged '
                              '(lower lr, or check the data); nothing was written')
    return value


def check_finite_weights(model: nn.Module, desc: str) -> None:
    """:class:`~nni_bap.errors.DivergenceError` naming the first parameter or buffer that is not finite."""
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise DivergenceError(f'{desc}: {name} holds non-finite values after training: training diverged '
                                  '(lower lr); nothing was written')


def training_step(batch, model: nn.Module) -> torch.Tensor:
    """Plain cross-entropy on ``(inputs, labels)``: the step NNI's hooks patch."""
    x, y = batch[0], batch[1]
    return nn.functional.cross_entropy(model(x), y)


BeginHook = Callable[[nn.Module, Any, Any], Tuple[int, int]]
EpochHook = Callable[[int, int, nn.Module, Any, Any], None]


def _run_epoch(net: nn.Module, loader: DataLoader, optimizers, training_step: Callable, step: int,
               max_steps: Optional[int], bar, desc: str) -> Tuple[int, bool]:
    """One pass over ``loader`` (batches moved to the model's device); (steps so far, whether max_steps was hit)."""
    device = model_device(net)
    for batch in loader:
        optimizers.zero_grad()
        loss = training_step(to_device(batch, device), net)
        step += 1
        value = check_finite(all_mean(loss), step, desc)
        loss.backward()
        optimizers.step()
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{value:.3f}")
        if max_steps and step >= max_steps:
            return step, True
    return step, False


def make_training_func(loader: DataLoader, default_epochs: int = 1, progress: Optional[bool] = True,
                       desc: str = 'train',
                       on_train_begin: Optional[BeginHook] = None,
                       on_epoch_end: Optional[EpochHook] = None) -> Callable:
    """An NNI ``training_func`` over ``loader`` that respects ``max_steps`` and ``max_epochs``.

    Batches go to the model's device. With a process group of several processes the model (NNI-wrapped, as NNI
    hands it over) is wrapped in ``DistributedDataParallel`` for the training step, the sampler's epoch is set
    every epoch, and the buffers are copied from rank 0 at the end (see :mod:`nni_bap.utils.distributed`).

    Parameters
    ----------
    progress
        A progress bar over the steps (loss every 20 steps); ``None``: when stderr is a terminal.
    on_train_begin
        ``f(model, optimizers, lr_schedulers) -> (epochs done, steps done)``, called once before training
        (after NNI set its hooks up): restores a checkpoint and says where to continue.
    on_epoch_end
        ``f(epochs done, steps done, model, optimizers, lr_schedulers)`` after every complete epoch (not after
        one that ``max_steps`` cut short; the schedulers are not stepped after the last); it may raise to stop
        training.
    """

    show = default_progress(progress)

    def training_func(model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        epochs = max_epochs if max_epochs is not None else (10 ** 9 if max_steps else default_epochs)
        total = max_steps if max_steps else epochs * len(loader)
        first, step = on_train_begin(model, optimizers, lr_schedulers) if on_train_begin else (0, 0)
        net = wrap_ddp(model)
        net.train()
        with tqdm(total=total, initial=step, desc=desc, disable=not (show and is_main()), leave=False) as bar:
            for epoch in range(first, epochs):
                if max_steps and step >= max_steps:
                    break
                set_epoch(loader, epoch)
                before = step
                step, hit = _run_epoch(net, loader, optimizers, training_step, step, max_steps, bar, desc)
                if lr_schedulers is not None and not hit:
                    lr_schedulers.step()
                if on_epoch_end is not None and step - before == len(loader):
                    on_epoch_end(epoch + 1, step, model, optimizers, lr_schedulers)
                if hit:
                    break
        sync_buffers(model)

    training_func.shows_progress = show
    return training_func


def make_evaluator(model: nn.Module, loader: DataLoader, lr: float = 1e-3, progress: Optional[bool] = None,
                   desc: str = 'prune', on_train_begin: Optional[BeginHook] = None,
                   on_epoch_end: Optional[EpochHook] = None) -> TorchEvaluator:
    """A ``TorchEvaluator`` training ``model`` with Adam on ``loader``; give it to the *base* pruner.

    ``progress``: a progress bar over the training steps; ``None`` (default) when stderr is a terminal, ``False``
    never. The hooks are :func:`make_training_func`'s (checkpoints, resuming). In several processes give a loader from
    :func:`nni_bap.utils.distributed.train_loader` (or your own with a ``DistributedSampler``).
    """
    optimizer = nni.trace(torch.optim.Adam)(model.parameters(), lr=lr)
    func = make_training_func(loader, progress=progress, desc=desc, on_train_begin=on_train_begin,
                              on_epoch_end=on_epoch_end)
    return TorchEvaluator(func, optimizer, training_step)


def train(model: nn.Module, dataset: Dataset, epochs: int = 5, batch_size: int = 64, lr: float = 1e-3,
          seed: int = 0, progress: bool = True, step_fn: Optional[Callable] = None) -> nn.Module:
    """Train ``model`` (dense, on its device) with Adam for ``epochs``; returns it. Data parallel in several
    processes (:mod:`nni_bap.utils.distributed`)."""
    loader = train_loader(dataset, batch_size, seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    make_training_func(loader, progress=progress, desc='dense')(model, opt, step_fn or training_step,
                                                                max_epochs=epochs)
    check_finite_weights(model, 'dense training')
    return model


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted labels (on ``x``'s device; computed on the model's), in eval mode (mode restored)."""
    was = model.training
    model.eval()
    device = model_device(model)
    try:
        return torch.cat([model(x[i:i + batch_size].to(device)).argmax(1).to(x.device)
                          for i in range(0, len(x), batch_size)])
    finally:
        model.train(was)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Fraction of ``x`` classified as ``y``."""
    return float((predict(model, x, batch_size) == y).float().mean())
