"""The channel block onnxruntime's CPU convolutions work in on this CPU: what channel alignment rounds to.

onnxruntime's graph optimiser (``NchwcTransformer``) moves convolutions into the blocked NCHWc layout of its MLAS
kernels: 16 channels per block where the CPU has AVX-512F, 8 with AVX2 (and, as a safe default, on other CPUs).
A convolution whose output is not a multiple of the block computes whole blocks anyway and its output is
reordered back to plain NCHW (measured on the small ResNet: 8 of 16 channels cost what 16 did, plus reorders).
Imports numpy only (through :mod:`nni_bap.export.cpu`).
"""
from __future__ import annotations

import logging
from typing import Dict, Optional, Union

from ..errors import ConfigError
from ..export.cpu import cpu_features

__all__ = ['block_width', 'resolve_align']

_logger = logging.getLogger(__name__)


def block_width(features: Optional[Dict[str, object]] = None) -> int:
    """onnxruntime's NCHWc block (channels) on a CPU with ``features`` (:func:`~nni_bap.export.cpu.cpu_features`;
    default: this CPU): 16 with AVX-512F, else 8."""
    f = features if features is not None else cpu_features()
    return 16 if f.get('avx512f') else 8


def resolve_align(align: Union[str, int], features: Optional[Dict[str, object]] = None) -> int:
    """The channel alignment ``align`` asks for: ``'auto'`` is :func:`block_width` of this CPU (logged), an integer
    >= 1 is itself (1: no alignment).

    Raises
    ------
    ConfigError
        Anything else.
    """
    if align == 'auto':
        f = features if features is not None else cpu_features()
        width = block_width(f)
        _logger.info('channel alignment: %d channels per block (onnxruntime NCHWc on this CPU: %s)', width,
                     'AVX-512F' if f.get('avx512f') else 'no AVX-512F')
        return width
    if isinstance(align, bool) or not isinstance(align, int) or align < 1:
        raise ConfigError(f"align must be 'auto' or an integer >= 1 (1: no channel alignment), got {align!r}")
    return align
