"""Gradual sparsity schedules as pure functions (kept apart from scoring and policy), each registered."""
from __future__ import annotations

from .registry import SCHEDULES

__all__ = ['SCHEDULES', 'agp_ratio', 'linear_ratio', 'schedule_ratio']


@SCHEDULES.register('agp', nni_pruner='AGPPruner')
def agp_ratio(current_times: int, total_times: int, initial_ratio: float = 0.0) -> float:
    """Polynomial decay (AGP, Zhu & Gupta 2017): ``1 - (1 - r0) * (1 - t / T) ** 3`` of the final sparsity."""
    return 1 - (1 - initial_ratio) * (1 - current_times / total_times) ** 3


@SCHEDULES.register('linear', nni_pruner='LinearPruner')
def linear_ratio(current_times: int, total_times: int, initial_ratio: float = 0.0) -> float:
    """Linear growth: ``(1 - r0) * t / T`` of the final sparsity (NNI's LinearPruner)."""
    return (1 - initial_ratio) * current_times / total_times


def schedule_ratio(schedule: str, current_times: int, total_times: int, initial_ratio: float = 0.0) -> float:
    """Fraction of the final sparsity reached after ``current_times`` of ``total_times`` updates.

    Raises
    ------
    ConfigError
        An unknown schedule; ``ValueError`` for ``current_times`` outside ``[0, total_times]``.
    """
    fn = SCHEDULES[schedule]
    if not 0 <= current_times <= total_times:
        raise ValueError(f'current_times {current_times} outside [0, {total_times}]')
    return fn(current_times, total_times, initial_ratio)
