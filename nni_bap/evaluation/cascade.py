"""The per-sample worst case over several attacks of one norm, computed as a cascade like AutoAttack.

Each sample carries the smallest budget at which some attack proved it non-robust (``broken``): 0 when it
is misclassified clean, the norm of the adversarial input a minimum-norm attack found, or the budget of
a fixed-budget attack that fooled it there. Robust accuracy at any budget ``b`` is then
``mean(broken > b)``: non-increasing in ``b`` by construction, and never above any single attack's curve.
Fixed-budget attacks run, budget by budget in increasing order, only on the samples still robust at that
budget: the cascade. Since a fixed-budget result is recorded at its budget, running every attack on every
sample gives the same ``broken`` (``cascade=False`` does that, for tests).

Every adversarial input found is also re-classified by the extra classifiers (e.g. onnxruntime), which
get their own ``broken`` from the same inputs.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List

import numpy as np
import torch
from torch import Tensor, nn

from ..attacks.base import flat_norm, shrink_to

__all__ = ['Cascade']
Classifier = Callable[[np.ndarray], np.ndarray]


class Cascade:
    """Worst case of one norm over minimum-norm and fixed-budget attacks (see the module docstring).

    Parameters
    ----------
    model
        Plain torch model in eval mode; it decides which samples the cascade still attacks.
    x, y
        Test inputs and labels.
    norm
        ``'linf'`` or ``'l2'``.
    classifiers
        ``name -> f(numpy inputs) -> labels``, ``'torch'`` included.
    batch_size
        Attack batch size.
    """

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, norm: str, classifiers: Dict[str, Classifier],
                 batch_size: int = 500):
        self.model, self.x, self.y, self.norm = model, x, y, norm
        self.classifiers, self.batch_size = classifiers, batch_size
        yn = y.cpu().numpy()
        self.broken = {c: np.where(f(x.cpu().numpy()) == yn, np.inf, 0.0) for c, f in classifiers.items()}
        self.eta = torch.zeros_like(x)
        self.log: List[Dict] = []

    def robust(self, budget: float, classifier: str = 'torch') -> np.ndarray:
        """Boolean per sample: no attack found an adversarial input within ``budget``."""
        return self.broken[classifier] > budget

    def _witness(self, idx: np.ndarray, x_adv: Tensor, at: np.ndarray) -> np.ndarray:
        """Record the adversarial inputs among ``x_adv`` (samples ``idx``) at norms ``at``; torch's verdict back."""
        yn = self.y.cpu().numpy()[idx]
        if len(idx) == 0:
            return np.zeros(0, dtype=bool)
        torch_wrong = None
        for c, f in self.classifiers.items():
            wrong = f(x_adv.detach().cpu().numpy()) != yn
            self.broken[c][idx[wrong]] = np.minimum(self.broken[c][idx[wrong]], at[wrong])
            torch_wrong = wrong if c == 'torch' else torch_wrong
        return torch_wrong

    def _batched(self, fn: Callable[[Tensor, Tensor], Tensor], idx: np.ndarray) -> Tensor:
        t = torch.from_numpy(idx).to(self.x.device)
        return torch.cat([fn(self.x[t[i:i + self.batch_size]], self.y[t[i:i + self.batch_size]])
                          for i in range(0, len(idx), self.batch_size)]) if len(idx) else self.x[:0]

    def min_norm(self, attack) -> np.ndarray:
        """Run a minimum-norm attack (``attack.attack(x, y).x_adv``) on the correctly classified samples.

        Returns the attack's own per-sample adversarial norms (0: misclassified clean, inf: nothing found);
        :attr:`eta` keeps its perturbations (zero for the samples it did not attack).
        """
        start = time.perf_counter()
        idx = np.flatnonzero(self.broken['torch'] > 0)
        x_adv = self._batched(lambda a, b: attack.attack(a, b).x_adv, idx)
        t = torch.from_numpy(idx).to(self.x.device)
        self.eta = torch.zeros_like(self.x)
        self.eta[t] = x_adv - self.x[t]
        at = flat_norm(self.eta[t], self.norm).double().cpu().numpy()
        wrong = self._witness(idx, x_adv, at)
        own = np.where(self.broken['torch'] > 0, np.inf, 0.0)
        own[idx[wrong]] = at[wrong]
        self.log.append({'attack': type(attack).__name__, 'budget': None, 'ran_on': int(len(idx)),
                         'found': float(np.isfinite(own[idx]).mean()) if len(idx) else 1.0,
                         'seconds': time.perf_counter() - start})
        return own

    def cut(self, eta: Tensor, budgets: List[float]) -> List[float]:
        """The paper's DeepFool curve: perturbations ``eta`` cut to each budget and re-classified by torch
        (a sample counts as robust at ``b`` only if it resists every cut up to ``b``).

        Cut points that fool a classifier are adversarial inputs within the budget, so they enter ``broken``.
        """
        alive = np.where(np.isinf(self.broken['torch']), True, self.broken['torch'] > 0)
        idx = np.arange(len(self.y))
        acc = []
        for b in budgets:
            cut = shrink_to(eta, b, self.norm)
            alive &= ~self._witness(idx, (self.x + cut).clamp(0.0, 1.0), np.full(len(idx), b))
            acc.append(float(alive.mean()))
        return acc

    def fixed(self, attack: Callable[[Tensor, Tensor], Tensor], budget: float, cascade: bool = True) -> float:
        """Run a fixed-budget attack (at ``budget``) on the samples still robust there, or on every correctly
        classified sample with ``cascade=False``; returns torch's worst-case accuracy at ``budget`` after it."""
        start = time.perf_counter()
        idx = np.flatnonzero(self.robust(budget) if cascade else self.broken['torch'] > 0)
        x_adv = self._batched(attack, idx)
        self._witness(idx, x_adv, np.full(len(idx), budget))
        acc = float(self.robust(budget).mean())
        self.log.append({'attack': type(attack).__name__, 'budget': budget, 'ran_on': int(len(idx)),
                         'accuracy_after': acc, 'seconds': time.perf_counter() - start})
        return acc
