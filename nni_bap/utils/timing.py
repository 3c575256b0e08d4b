"""Wall-time comparisons measured side by side: alternating rounds after warm-up, medians."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List

__all__ = ['alternating_ms']


def alternating_ms(fns: Dict[str, Callable[[], object]], repeats: int, warmup: int = 5) -> Dict[str, float]:
    """Median wall time (ms) of each function, the functions run in alternation after ``warmup`` rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - start) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}
