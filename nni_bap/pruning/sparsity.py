"""Sparsity of NNI masks: the current sparsity during pruning, and the final check against the targets."""
from __future__ import annotations

from typing import Dict, Tuple

from torch import Tensor

from ..errors import SparsityError

__all__ = ['SPARSITY_TOLERANCE', 'check_sparsity', 'current_sparsity', 'targets']

#: Largest allowed difference between a layer's measured and target sparsity, beyond one pruning unit.
SPARSITY_TOLERANCE = 0.01


def current_sparsity(target_spaces) -> float:
    """Fraction of masked elements over every masked ``weight`` target of an NNI pruner."""
    zeros, total = 0, 0
    for ts in target_spaces.values():
        for name, space in ts.items():
            target = space.target
            if name != 'weight' or not isinstance(target, Tensor):
                continue
            total += target.numel()
            if space.mask is not None:
                zeros += int((space.mask == 0).sum())
    return zeros / total if total else 0.0


def targets(pruner) -> Dict[str, Tuple]:
    """Layer name -> (target sparsity, granularity, global group id or None) of every weight NNI masks."""
    return {name: (float(ts['weight'].sparse_ratio), str(ts['weight'].granularity), ts['weight'].global_group_id)
            for name, ts in pruner._target_spaces.items() if 'weight' in ts}


def _measured(mask, granularity: str) -> Tuple[float, float, float]:
    """(zeros, elements, pruning units) of one weight mask (a missing mask has no zeros)."""
    if mask is None:
        return 0.0, 0.0, 1.0
    n = float(mask.numel())
    return float((mask == 0).sum()), n, float(mask.shape[0] if 'channel' in granularity else n)


def check_sparsity(masks, targets: Dict[str, Tuple], tolerance: float = SPARSITY_TOLERANCE) -> Dict[str, float]:
    """Measured sparsity of every masked weight, or of every global group (``global_group_id``), against its target.

    A layer (a group) may miss its target by ``tolerance`` plus one pruning unit (one output channel for
    channel pruning, one weight otherwise). Returns ``{'target': ..., 'measured': ...}`` over all
    weights; raises :class:`~nni_bap.errors.SparsityError` naming the first layer or group that misses.
    """
    checks: Dict[str, list] = {}  # what is checked -> [zeros, elements, units, target]
    zeros = total = expected = 0.0
    for name, (ratio, granularity, *group) in sorted(targets.items()):
        z, n, units = _measured((masks.get(name) or {}).get('weight'), granularity)
        key = f'global group {group[0]}' if group and group[0] is not None else f'layer {name}'
        c = checks.setdefault(key, [0.0, 0.0, 0.0, ratio])
        c[0], c[1], c[2] = c[0] + z, c[1] + n, c[2] + units
        zeros, total, expected = zeros + z, total + n, expected + ratio * n
    for key, (z, n, units, ratio) in checks.items():
        got = z / n if n else 0.0
        if abs(got - ratio) > tolerance + 1.0 / max(units, 1.0):
            raise SparsityError(f'{key} reached sparsity {got:.3f}, target {ratio:.3f}: the schedule did not '
                                'finish (more epochs or a larger schedule_fraction) or the pruner cannot reach it')
    return {'target': expected / total if total else 0.0, 'measured': zeros / total if total else 0.0}
