"""Which int8 kernel path onnxruntime takes on this CPU, and the quantisation settings that hold on it.

onnxruntime runs uint8-activation x int8-weight (U8S8) convolutions and matrix products on x86 with one of
two instruction families:

- **VNNI** (AVX-512 VNNI, ``vpdpbusd``): products are accumulated in 32 bits, nothing saturates;
- **no VNNI** (AVX2 or AVX-512 without VNNI, and older x86): ``vpmaddubsw`` adds two u8 x s8 products into
  a 16-bit integer that *saturates*, so a model quantised with full-range int8 weights computes other
  logits there than on a VNNI CPU. onnxruntime's documentation recommends ``reduce_range`` (7-bit weights:
  ``2 * 255 * 64 < 2**15``, no saturation) or U8U8 on such CPUs. ``reduce_range`` keeps the U8S8 kernels
  (the same speed; U8U8 measured 1.8x slower on an AVX-512 VNNI CPU), so it is what the ``'no-vnni'`` target
  uses.

A model quantised for ``'no-vnni'`` gives the same results on every x86 CPU, so it is the choice for a
model that will run on a CPU other than the one it is exported on. Other architectures (ARM) have no such
saturation and take the ``'vnni'`` settings. Imports numpy only.
"""
from __future__ import annotations

import platform
from typing import Callable, Dict, Optional

from ..errors import ConfigError

__all__ = ['INT8_TARGETS', 'cpu_features', 'int8_settings', 'int8_target']

#: Target CPU kind -> the quantiser settings that hold on it.
INT8_TARGETS: Dict[str, Dict[str, object]] = {
    'vnni': {'reduce_range': False},
    'no-vnni': {'reduce_range': True},
}
_REPORTED = ('AVX2', 'AVX512F', 'AVX512BW', 'AVX512VNNI')


def _numpy_features() -> Dict[str, bool]:
    """numpy's CPU dispatch table (read from CPUID by numpy itself); empty where it cannot be read."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__
        except ImportError:
            return {}
    return dict(__cpu_features__)


def cpu_features(read: Callable[[], Dict[str, bool]] = _numpy_features) -> Dict[str, object]:
    """This CPU's architecture and the instruction sets that decide the int8 path (``read``: for tests)."""
    found = read()
    return {'machine': platform.machine().lower(), **{k.lower(): bool(found.get(k, False)) for k in _REPORTED}}


def _is_x86(machine: str) -> bool:
    return machine in ('x86_64', 'amd64', 'i386', 'i686', 'x86')


def int8_target(features: Optional[Dict[str, object]] = None) -> str:
    """This CPU's int8 kind: ``'vnni'`` on an x86 CPU with AVX-512 VNNI (or a non-x86 CPU), else ``'no-vnni'``."""
    f = features if features is not None else cpu_features()
    if not _is_x86(str(f.get('machine', ''))):
        return 'vnni'
    return 'vnni' if f.get('avx512vnni') else 'no-vnni'


def int8_settings(target_cpu: str = 'auto', features: Optional[Dict[str, object]] = None) -> Dict[str, object]:
    """The settings for ``target_cpu`` (``'auto'``: this CPU's kind), with the kind and the CPU features seen.

    Raises
    ------
    ValueError
        An unknown target.
    """
    f = features if features is not None else cpu_features()
    chosen = int8_target(f) if target_cpu == 'auto' else target_cpu
    if chosen not in INT8_TARGETS:
        raise ConfigError(f"target_cpu must be 'auto', 'vnni' or 'no-vnni', got {target_cpu!r}")
    return {**INT8_TARGETS[chosen], 'target_cpu': chosen, 'chosen_by': 'this CPU' if target_cpu == 'auto' else 'forced',
            'cpu': f}
