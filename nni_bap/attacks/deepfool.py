"""DeepFool (Moosavi-Dezfooli et al., 2016): the minimal perturbation that crosses the decision boundary.

Batched and vectorised: every iteration runs one forward pass over the samples
that have not crossed yet and one backward pass per rival class, each giving
the gradients of ``f_k - f_y`` for the whole batch at once. Samples that have
crossed drop out of later iterations.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .base import Attack, check_candidates, check_count, check_norm, check_number

__all__ = ['DeepFool', 'DeepFoolResult']


@dataclass
class DeepFoolResult:
    """What one DeepFool run found.

    Attributes
    ----------
    x_adv
        Adversarial inputs, clamped into the valid range.
    eta
        ``x_adv - x``: the per-example (nonuniform) perturbation, overshoot included.
    crossed
        Boolean per sample: the label is no longer predicted at ``x_adv``
        (also true for samples misclassified from the start, whose ``eta`` is 0).
    iterations
        Iterations each sample took.
    """

    x_adv: Tensor
    eta: Tensor
    crossed: Tensor
    iterations: Tensor


class DeepFool(Attack):
    """DeepFool, L2 or Linf, with optional top-k candidate classes.

    Parameters
    ----------
    model
        Classifier returning logits.
    steps
        Maximum iterations per sample, >= 1.
    overshoot
        The accumulated step is multiplied by ``1 + overshoot`` (>= 0) to land past the boundary.
    norm
        ``'l2'`` or ``'linf'``.
    candidates
        How many of the most likely classes are considered, the label's included (as in foolbox):
        ``candidates=3`` looks at the two strongest rivals. ``None`` considers all classes.
    clip_min, clip_max
        Valid input range.
    drop_crossed
        Drop samples that crossed from later iterations (default). ``False`` keeps the whole
        batch in every forward/backward pass (crossed samples frozen): the straightforward
        implementation, kept as the reference for benchmarks.
    check_final
        Run one more forward pass to fill :attr:`DeepFoolResult.crossed` for the samples still
        active after the last iteration. Training hooks that do not need it can turn it off.
    """

    def __init__(self, model: nn.Module, steps: int = 50, overshoot: float = 0.02, norm: str = 'l2',
                 candidates: int | None = None, clip_min: float | None = 0.0, clip_max: float | None = 1.0,
                 drop_crossed: bool = True, check_final: bool = True):
        super().__init__(model, clip_min, clip_max)
        self.steps = check_count('steps', steps)
        self.overshoot = check_number('overshoot', overshoot)
        self.norm = check_norm(norm)
        self.candidates = check_candidates(candidates)
        self.drop_crossed = drop_crossed
        self.check_final = check_final

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        """The adversarial inputs only (what ``DeepFool(model)(x, y)`` returns)."""
        return self.run(x, y).x_adv

    def attack(self, x: Tensor, y: Tensor) -> DeepFoolResult:
        """Like calling the attack (inputs checked, eval mode, mode restored), but return all it found."""
        return self.guarded(self.run, x, y)

    def _rivals(self, logits: Tensor, y: Tensor) -> Tensor:
        n, k = logits.shape
        if self.candidates is not None and self.candidates < k:
            # y is the top-1 class of every active sample, so the next ones are the rivals
            return logits.detach().topk(self.candidates, dim=1).indices[:, 1:]
        classes = torch.arange(k, device=logits.device).expand(n, k)
        return classes[classes != y[:, None]].view(n, k - 1)

    def _free(self, w: Tensor, xa: Tensor) -> Tensor:
        """Zero the gradient components that would push a pixel already at a range limit further out.

        Without this DeepFool stalls on inputs with saturated pixels (digits, MNIST): its steps go
        into coordinates that clamping then removes.
        """
        if self.clip_max is not None:
            w = w.masked_fill((xa >= self.clip_max)[:, None, :] & (w > 0), 0.0)
        if self.clip_min is not None:
            w = w.masked_fill((xa <= self.clip_min)[:, None, :] & (w < 0), 0.0)
        return w

    def _step(self, f: Tensor, w: Tensor) -> Tensor:
        """Step onto the nearest linearised boundary; ``f``: (n, R) margins, ``w``: (n, R, D) their gradients."""
        if self.norm == 'l2':
            wnorm = w.norm(dim=2)
        else:
            wnorm = w.abs().sum(dim=2)
        dist = f.abs() / (wnorm + 1e-12)
        best = dist.argmin(dim=1)
        rows = torch.arange(f.shape[0], device=f.device)
        fb, wb, nb = f[rows, best].abs(), w[rows, best], wnorm[rows, best]
        if self.norm == 'l2':
            return ((fb + 1e-8) / (nb ** 2 + 1e-12))[:, None] * wb
        return ((fb + 1e-8) / (nb + 1e-12))[:, None] * wb.sign()

    def run(self, x: Tensor, y: Tensor) -> DeepFoolResult:
        """DeepFool without mode handling (the caller owns the model's mode)."""
        b = x.shape[0]
        shape = x.shape[1:]
        r_tot = torch.zeros(b, shape.numel(), dtype=x.dtype, device=x.device)
        x_adv = x.clone()
        crossed = torch.zeros(b, dtype=torch.bool, device=x.device)
        iterations = torch.zeros(b, dtype=torch.long, device=x.device)
        everyone = torch.arange(b, device=x.device)
        active = everyone
        for _ in range(self.steps):
            rows = active if self.drop_crossed else everyone
            xa = x_adv[rows].requires_grad_(True)
            logits = self.logits(xa)
            still = (logits.argmax(dim=1) == y[rows]) & ~crossed[rows]
            crossed[rows[~still]] = True
            if not bool(still.any()):
                active = active[:0]
                break
            keep = still.nonzero().squeeze(1)
            # the reference mode differentiates the whole batch; the default only what still moves
            src = logits[keep] if self.drop_crossed else logits
            ys = y[rows[keep]] if self.drop_crossed else y[rows]
            f = src.gather(1, self._rivals(src, ys)) - src.gather(1, ys[:, None])
            grads = [torch.autograd.grad(f[:, j].sum(), xa, retain_graph=j < f.shape[1] - 1)[0][keep]
                     for j in range(f.shape[1])]
            f = f if self.drop_crossed else f[keep]
            active = rows[keep]
            w = self._free(torch.stack([g.reshape(keep.shape[0], -1) for g in grads], dim=1),
                           xa.detach()[keep].reshape(keep.shape[0], -1))
            iterations[active] += 1
            r_tot[active] += self._step(f.detach(), w)
            x_adv[active] = self.clamp(x[active] + (1 + self.overshoot) * r_tot[active].view(-1, *shape))
        if self.check_final and active.numel() > 0:
            with torch.no_grad():
                crossed[active] = self.logits(x_adv[active]).argmax(dim=1) != y[active]
        x_adv = x_adv.detach()
        return DeepFoolResult(x_adv=x_adv, eta=x_adv - x, crossed=crossed, iterations=iterations)
