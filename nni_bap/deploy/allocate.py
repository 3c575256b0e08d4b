"""Allocating channel widths within a latency budget: a pure function of the options, the importance kept at each
width and a latency predictor.

The problem is a multiple-choice knapsack whose weights interact (a convolution's cost depends on the widths of
its input *and* its output unit), so the predictor is called on whole width assignments. Small problems are
solved exactly by enumeration; larger ones greedily, as NetAdapt does: starting from the dense widths, the unit
whose next narrower width loses the least importance per unit of latency saved gives up one step, until every
batch size meets its budget.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Sequence

__all__ = ['Allocation', 'allocate']

#: Assignments enumerated exactly; beyond this the greedy search runs.
EXHAUSTIVE_LIMIT = 50_000


@dataclass(frozen=True)
class Allocation:
    """Widths per unit, their predicted latency per batch size, the importance kept, whether it meets the budget."""

    widths: Dict[str, int]
    latency_ms: Dict[int, float]
    importance: float
    feasible: bool
    method: str


def _cost(latency: Mapping[int, float], budget: Mapping[int, float]) -> float:
    """Latency as a share of the budget, summed over the batch sizes."""
    return sum(latency[b] / budget[b] for b in budget)


def _fits(latency: Mapping[int, float], budget: Mapping[int, float]) -> bool:
    return all(latency[b] <= budget[b] for b in budget)


def _exhaustive(options, value, latency, budget) -> Optional[Allocation]:
    names = list(options)
    best = None
    for combo in itertools.product(*(options[n] for n in names)):
        widths = dict(zip(names, combo))
        lat = latency(widths)
        if not _fits(lat, budget):
            continue
        kept = sum(value(n, w) for n, w in widths.items())
        key = (kept, -_cost(lat, budget))
        if best is None or key > best[0]:
            best = (key, Allocation(widths, dict(lat), kept, True, 'exhaustive'))
    return best[1] if best else None


def _greedy(options, value, latency, budget) -> Allocation:
    widths = {n: max(o) for n, o in options.items()}
    lat = latency(widths)
    while not _fits(lat, budget):
        best = None
        for n, opts in options.items():
            lower = [w for w in opts if w < widths[n]]
            if not lower:
                continue
            trial = {**widths, n: max(lower)}
            trial_lat = latency(trial)
            saved = _cost(lat, budget) - _cost(trial_lat, budget)
            if saved <= 0:
                continue
            ratio = (value(n, widths[n]) - value(n, trial[n])) / saved
            if best is None or ratio < best[0]:
                best = (ratio, trial, trial_lat)
        if best is None:
            break
        _, widths, lat = best
    kept = sum(value(n, w) for n, w in widths.items())
    return Allocation(widths, dict(lat), kept, _fits(lat, budget), 'greedy')


def allocate(options: Mapping[str, Sequence[int]], value: Callable[[str, int], float],
             latency: Callable[[Mapping[str, int]], Mapping[int, float]], budget: Mapping[int, float],
             exhaustive_limit: int = EXHAUSTIVE_LIMIT) -> Allocation:
    """Widths (one of ``options[unit]`` per unit) that keep the most importance with every batch size's predicted
    latency within its budget.

    Parameters
    ----------
    options
        Unit -> candidate widths.
    value
        ``value(unit, width)``: importance the unit keeps at that width (non-decreasing in the width).
    latency
        ``latency(widths) -> {batch: ms}``, the predictor (pure).
    budget
        ``{batch: ms}``.

    Returns
    -------
    Allocation
        ``feasible`` False (the narrowest widths, with their latency) when no assignment meets the budget.
    """
    size = 1
    for o in options.values():
        size *= len(o)
    if size <= exhaustive_limit:
        found = _exhaustive(options, value, latency, budget)
        if found is not None:
            return found
        narrow = {n: min(o) for n, o in options.items()}
        return Allocation(narrow, dict(latency(narrow)), sum(value(n, w) for n, w in narrow.items()), False,
                          'exhaustive')
    return _greedy(options, value, latency, budget)
