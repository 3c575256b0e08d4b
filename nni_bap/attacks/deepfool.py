"""DeepFool (Moosavi-Dezfooli et al., 2016): the minimal perturbation that crosses the decision boundary.

Batched and vectorised: every iteration runs one forward pass over the samples
that have not crossed yet and one backward pass per rival class, each giving
the gradients of ``f_k - f_y`` for the whole batch at once (with two candidates,
the label and its strongest rival, one backward per iteration). Samples that have
crossed drop out of later iterations. An optional warm start begins each sample
from a given perturbation (e.g. its last one).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .base import MinNormAttack, check_candidates, check_count, check_norm, check_number
from .registry import register_attack

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


@register_attack('deepfool', norms=('linf', 'l2'))
class DeepFool(MinNormAttack):
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

    def attack(self, x: Tensor, y: Tensor, start: Tensor | None = None) -> DeepFoolResult:
        """Like calling the attack (inputs checked, eval mode, mode restored), but return all it found.

        ``start``: optional warm start, per-sample perturbations to begin from (see :meth:`run`).
        """
        if start is None:
            return self.guarded(self.run, x, y)
        return self.guarded(lambda xx, yy: self.run(xx, yy, start), x, y)

    def _rivals(self, logits: Tensor, y: Tensor) -> Tensor:
        """The rival classes of every row: the ``candidates - 1`` strongest classes other than the label."""
        n, k = logits.shape
        if self.candidates is not None and self.candidates < k:
            others = logits.detach().scatter(1, y[:, None], -torch.inf)
            return others.topk(self.candidates - 1, dim=1).indices
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
        """Newton step onto a linearised boundary; ``f``: (n, R) margins, ``w``: (n, R, D) their gradients.

        A sample on the label's side (every ``f < 0``) steps onto the nearest boundary; one already across
        (a warm start past the boundary) steps back onto the boundary of the class it is predicted as.
        """
        if self.norm == 'l2':
            wnorm = w.norm(dim=2)
        else:
            wnorm = w.abs().sum(dim=2)
        across = (f > 0).any(dim=1, keepdim=True)
        best = torch.where(across, -f, f.abs() / (wnorm + 1e-12)).argmin(dim=1)
        rows = torch.arange(f.shape[0], device=f.device)
        fb, wb, nb = f[rows, best], w[rows, best], wnorm[rows, best]
        if self.norm == 'l2':
            return ((1e-8 - fb) / (nb ** 2 + 1e-12))[:, None] * wb
        return ((1e-8 - fb) / (nb + 1e-12))[:, None] * wb.sign()

    def _margins(self, logits: Tensor, xa: Tensor, rows: Tensor, keep: Tensor, y: Tensor):
        """Margins ``f_rival - f_label`` of the samples ``keep`` (positions in ``rows``) and their input gradients.

        One backward pass per rival: the gradient of the margin summed over the batch gives every sample's
        own gradient at once (samples are independent in eval mode), so two candidates cost one backward.
        """
        # the reference mode differentiates the whole batch; the default only what still moves
        src = logits[keep] if self.drop_crossed else logits
        ys = y[rows[keep]] if self.drop_crossed else y[rows]
        f = src.gather(1, self._rivals(src, ys)) - src.gather(1, ys[:, None])
        grads = [torch.autograd.grad(f[:, j].sum(), xa, retain_graph=j < f.shape[1] - 1)[0][keep]
                 for j in range(f.shape[1])]
        f = f if self.drop_crossed else f[keep]
        w = self._free(torch.stack([g.reshape(keep.shape[0], -1) for g in grads], dim=1),
                       xa.detach()[keep].reshape(keep.shape[0], -1))
        return f.detach(), w

    def _warm(self, x: Tensor, start: Tensor | None):
        """The starting accumulated step (overshoot taken out of ``start``) and which samples start warm."""
        r_tot = torch.zeros(x.shape[0], x[0].numel(), dtype=x.dtype, device=x.device)
        if start is None:
            return r_tot, None
        if start.shape != x.shape:
            raise ValueError(f'start must have the shape of the inputs {tuple(x.shape)}, got {tuple(start.shape)}')
        r_tot += start.detach().reshape(r_tot.shape).to(x.dtype) / (1 + self.overshoot)
        return r_tot, (r_tot != 0).any(dim=1)

    def _still(self, x_adv: Tensor, y: Tensor, rows: Tensor, crossed: Tensor) -> Tensor:
        """A forward pass without gradients over ``rows``: mark those across, return those still to move."""
        with torch.no_grad():
            still = self.logits(x_adv[rows]).argmax(dim=1) == y[rows]
        crossed[rows[~still]] = True
        return rows[still]

    def run(self, x: Tensor, y: Tensor, start: Tensor | None = None) -> DeepFoolResult:
        """DeepFool without mode handling (the caller owns the model's mode).

        ``start``: optional per-sample perturbations to begin from (a warm start, e.g. each sample's
        last perturbation); all-zero rows start cold. A warm sample begins at ``x + start / (1 + overshoot)``,
        where its last perturbation was before the overshoot, and its first step goes onto the linearised
        boundary from whichever side it is on (back, if the boundary has moved inwards). Meant for starts
        near the boundary: from far past it (several times the needed norm) the step back is unreliable.

        From the second iteration on, a forward pass without gradients settles which samples still need
        a step; only those go through the forward and backward pass that gives the gradients.
        """
        b, shape = x.shape[0], x.shape[1:]
        r_tot, warm = self._warm(x, start)
        x_adv = self.clamp(x + r_tot.view(-1, *shape)) if warm is not None else x.clone()
        crossed = torch.zeros(b, dtype=torch.bool, device=x.device)
        iterations = torch.zeros(b, dtype=torch.long, device=x.device)
        everyone = torch.arange(b, device=x.device)
        active = everyone
        for it in range(self.steps):
            rows = active if self.drop_crossed else everyone
            if self.drop_crossed and it > 0:  # a cheap pass without gradients drops those already across
                rows = self._still(x_adv, y, rows, crossed)
            if rows.numel() == 0:
                break
            xa = x_adv[rows].requires_grad_(True)
            logits = self.logits(xa)
            # decided on the logits the gradients come from: a sample this pass sees across takes no step
            moving = (logits.argmax(dim=1) == y[rows]) & ~crossed[rows]
            moving = moving | warm[rows] if it == 0 and warm is not None else moving
            crossed[rows[~moving]] = True
            keep = moving.nonzero().squeeze(1)
            active = rows[keep]
            if keep.numel() == 0:
                break
            f, w = self._margins(logits, xa, rows, keep, y)
            moved = rows[keep]
            iterations[moved] += 1
            r_tot[moved] += self._step(f, w)
            x_adv[moved] = self.clamp(x[moved] + (1 + self.overshoot) * r_tot[moved].view(-1, *shape))
        if self.check_final and active.numel() > 0:
            with torch.no_grad():
                crossed[active] = self.logits(x_adv[active]).argmax(dim=1) != y[active]
        x_adv = x_adv.detach()
        return DeepFoolResult(x_adv=x_adv, eta=x_adv - x, crossed=crossed, iterations=iterations)
