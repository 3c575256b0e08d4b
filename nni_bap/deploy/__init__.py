"""Deployment plans: pruning that pays where the model runs.

Channel alignment to onnxruntime's block (:mod:`.block`), the layers a latency table prices (:mod:`.layers`),
per-layer onnxruntime latency tables (:mod:`.latency`), channel importance on the dense model (:mod:`.importance`),
the allocation of per-layer widths within a latency budget (:mod:`.allocate`, pure) and the plan that ties them
together (:mod:`.plan`). Names are imported lazily (the block needs numpy only).
"""
from __future__ import annotations

from ..utils.lazy import lazy_attributes

__all__ = ['IMPORTANCE', 'LatencyTable', 'Plan', 'allocate', 'block_width', 'latency_table', 'make_plan',
           'resolve_align', 'verify_plan']

__getattr__ = lazy_attributes(__name__, __all__, ('.block', '.allocate', '.importance', '.latency', '.plan'))
