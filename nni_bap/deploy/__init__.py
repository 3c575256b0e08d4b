"""Deployment plans: pruning that pays where the model runs.

Channel alignment to onnxruntime's block (:mod:`.block`), per-layer onnxruntime latency tables (:mod:`.latency`),
channel importance on the dense model (:mod:`.importance`), the allocation of per-layer widths within a latency
budget (:mod:`.allocate`, pure) and the plan that ties them together (:mod:`.plan`). Names are imported lazily.
"""
from __future__ import annotations

from ..utils.lazy import lazy_attributes

__all__ = ['block_width', 'resolve_align']

__getattr__ = lazy_attributes(__name__, __all__, ('.block',))
