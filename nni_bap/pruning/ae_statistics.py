"""Per-step statistics of an AE generator: mean, median and 90th percentile of per-sample values."""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

__all__ = ['quantiles']


def quantiles(v: Tensor, prefix: str) -> Dict[str, float]:
    """``{prefix_mean, prefix_p50, prefix_p90}`` of the values ``v`` (all 0 when there are none).

    Examples
    --------
    ``quantiles(torch.tensor([1.0, 2.0, 3.0]), 'norm')`` gives ``norm_mean`` 2, ``norm_p50`` 2, ``norm_p90`` 2.8.
    """
    if v.numel() == 0:
        return {f'{prefix}_mean': 0.0, f'{prefix}_p50': 0.0, f'{prefix}_p90': 0.0}
    q = torch.quantile(v.float(), torch.tensor([0.5, 0.9], device=v.device))
    return {f'{prefix}_mean': float(v.mean()), f'{prefix}_p50': float(q[0]), f'{prefix}_p90': float(q[1])}
