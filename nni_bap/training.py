"""Training helpers: NNI evaluators, dense training and accuracy (NNI's TorchEvaluator contract)."""
from __future__ import annotations

import math
from typing import Callable, Optional

import nni
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from nni.compression.utils import TorchEvaluator

from .errors import DivergenceError

__all__ = ['accuracy', 'check_finite', 'check_finite_weights', 'make_evaluator', 'make_training_func', 'predict', 'train', 'training_step']


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


def make_training_func(loader: DataLoader, default_epochs: int = 1, progress: bool = True,
                       desc: str = 'train') -> Callable:
    """An NNI ``training_func`` over ``loader`` that respects ``max_steps`` and ``max_epochs``."""

    def training_func(model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        epochs = max_epochs if max_epochs else (10 ** 9 if max_steps else default_epochs)
        total = max_steps if max_steps else epochs * len(loader)
        step = 0
        model.train()
        with tqdm(total=total, desc=desc, disable=not progress, leave=False) as bar:
            for _ in range(epochs):
                for batch in loader:
                    optimizers.zero_grad()
                    loss = training_step(batch, model)
                    step += 1
                    value = check_finite(loss, step, desc)
                    loss.backward()
                    optimizers.step()
                    bar.update(1)
                    if step % 20 == 0:
                        bar.set_postfix(loss=f"{value:.3f}")
                    if max_steps and step >= max_steps:
                        return
                if lr_schedulers is not None:
                    lr_schedulers.step()

    return training_func


def make_evaluator(model: nn.Module, loader: DataLoader, lr: float = 1e-3, progress: bool = True,
                   desc: str = 'prune') -> TorchEvaluator:
    """A ``TorchEvaluator`` training ``model`` with Adam on ``loader``; give it to the *base* pruner."""
    optimizer = nni.trace(torch.optim.Adam)(model.parameters(), lr=lr)
    return TorchEvaluator(make_training_func(loader, progress=progress, desc=desc), optimizer, training_step)


def train(model: nn.Module, dataset: Dataset, epochs: int = 5, batch_size: int = 64, lr: float = 1e-3,
          seed: int = 0, progress: bool = True, step_fn: Optional[Callable] = None) -> nn.Module:
    """Train ``model`` (dense) with Adam for ``epochs``; returns it."""
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    make_training_func(loader, progress=progress, desc='dense')(model, opt, step_fn or training_step,
                                                                max_epochs=epochs)
    check_finite_weights(model, 'dense training')
    return model


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted labels, in eval mode (mode restored)."""
    was = model.training
    model.eval()
    try:
        return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    finally:
        model.train(was)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Fraction of ``x`` classified as ``y``."""
    return float((predict(model, x, batch_size) == y).float().mean())
