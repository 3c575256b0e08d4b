"""Gradual sparsity schedules as pure functions (kept apart from scoring and policy)."""
from __future__ import annotations

__all__ = ['SCHEDULES', 'agp_ratio', 'linear_ratio', 'schedule_ratio']


def agp_ratio(current_times: int, total_times: int, initial_ratio: float = 0.0) -> float:
    """Polynomial decay (AGP, Zhu & Gupta 2017): ``1 - (1 - r0) * (1 - t / T) ** 3`` of the final sparsity."""
    return 1 - (1 - initial_ratio) * (1 - current_times / total_times) ** 3


def linear_ratio(current_times: int, total_times: int, initial_ratio: float = 0.0) -> float:
    """Linear growth: ``(1 - r0) * t / T`` of the final sparsity (NNI's LinearPruner)."""
    return (1 - initial_ratio) * current_times / total_times


#: Schedule name -> ratio function, shared by the pruners, the CLI and the tests.
SCHEDULES = {'agp': agp_ratio, 'linear': linear_ratio}


def schedule_ratio(schedule: str, current_times: int, total_times: int, initial_ratio: float = 0.0) -> float:
    """Fraction of the final sparsity reached after ``current_times`` of ``total_times`` updates."""
    try:
        fn = SCHEDULES[schedule]
    except KeyError:
        raise ValueError(f'unknown schedule {schedule!r}; choose one of {sorted(SCHEDULES)}') from None
    if not 0 <= current_times <= total_times:
        raise ValueError(f'current_times {current_times} outside [0, {total_times}]')
    return fn(current_times, total_times, initial_ratio)
