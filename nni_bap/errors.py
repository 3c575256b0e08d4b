"""Every error a user can cause and fix, each stated in one line, under one root: :class:`BapError`.

The command line catches :class:`BapError` alone, prints its one line and exits with code 2. Kept free of
torch, NNI and onnx, so that every module (the torch-free :mod:`nni_bap.export.runtime` too) can import it.
The built-in base beside :class:`BapError` says what kind of problem it is (``ValueError`` for a bad value,
``RuntimeError`` for a check that failed), so ``except ValueError`` keeps working for callers.
"""
from __future__ import annotations

import pickle
from typing import Dict, List, Optional

__all__ = ['BadPickleError', 'BapError', 'BatchNormDriftError', 'CheckpointError', 'ConfigError', 'CorruptModelError',
           'DataError', 'DivergenceError', 'ExportError', 'InputShapeError', 'InputValueError', 'MasksNeededError',
           'NNIUsageError', 'OnnxParityError', 'QuantizationError', 'RunFolderError', 'SparsityError',
           'SpeedupParityError', 'UnsafePickleError', 'BRIEF_CHARS', 'brief']

#: Longest ``repr`` of a value an error message quotes (a hostile value must not make an 8 MB "one line").
BRIEF_CHARS = 200


def brief(value: object, limit: int = BRIEF_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters (with the length it had), for quoting a value in an error message."""
    try:
        text = repr(value)
    except RecursionError:  # a self-referential or very deeply nested value
        return f'<{type(value).__name__} nested too deeply to show>'
    return text if len(text) <= limit else f'{text[:limit]}... ({len(text)} characters)'


class BapError(Exception):
    """Root of the errors caused by a setting, a file or a folder the user gave; the message names it."""


class ConfigError(BapError, ValueError):
    """A setting out of range or unknown (a config key, a pruner's, an attack's or a spec's setting)."""


class DataError(BapError, ValueError):
    """A dataset file is missing or malformed; the message names it."""


class UnsafePickleError(BapError, pickle.UnpicklingError):
    """A pickle asks for a global that is not plain data; :attr:`name` is that global (``module.name``)."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(f'refused global {name!r}: a data file may only hold builtin containers, strings, '
                         'numbers and numpy arrays')


class BadPickleError(BapError, pickle.UnpicklingError):
    """A data pickle that cannot be read as plain data (malformed, truncated, or a value out of range); names what
    failed. Every failure of the restricted unpickler is this or :class:`UnsafePickleError`."""


class NNIUsageError(BapError, ValueError):
    """A combination of NNI objects that NNI accepts but that silently does the wrong thing."""


class DivergenceError(BapError):
    """Training produced a non-finite loss or weights; nothing was written."""


class SparsityError(BapError):
    """The pruned model's measured sparsity does not match the target."""


class RunFolderError(BapError):
    """A run folder is missing, damaged or inconsistent, or one of its files cannot be written; names the file."""


class CheckpointError(BapError):
    """A checkpoint that cannot be resumed from (damaged, or written by another run); the message says which."""


class ExportError(BapError, RuntimeError):
    """Base of every exporter error."""


class SpeedupParityError(ExportError):
    """The sped-up model's outputs differ from the masked model's."""


class BatchNormDriftError(SpeedupParityError):
    """Removing pruned channels would change the model: their BatchNorm shifts still reach the masked model's logits
    (``bn_drift`` beyond the tolerance). :attr:`bn_drift` is the measured drift."""

    def __init__(self, message: str, bn_drift: float):
        self.bn_drift = float(bn_drift)
        super().__init__(message)


class MasksNeededError(ExportError, ValueError):
    """A pruned model given to the exporter without ``masks=``: it would be written full size; says what to pass."""


class OnnxParityError(ExportError):
    """onnxruntime disagrees with torch; :attr:`mismatches` lists every check that failed."""

    def __init__(self, mismatches: List[str]):
        self.mismatches = list(mismatches)
        super().__init__('ONNX validation failed:\n  - ' + '\n  - '.join(self.mismatches))


class InputShapeError(ExportError, ValueError):
    """An input does not have the shape the model was exported for."""


class InputValueError(ExportError, ValueError):
    """An input holds values a classifier cannot be scored on (NaN or infinity)."""


class CorruptModelError(ExportError):
    """A model file that cannot be used: an ``.onnx`` file that cannot be loaded, does not pass the ONNX checker, is
    not a classifier with one input and one ``(batch, classes)`` output or holds non-finite weights; or a run's
    ``model.pt`` whose contents are not what ``bap prune`` writes (the message names the key)."""


class QuantizationError(ExportError):
    """An int8 model was not written: too few calibration inputs, or it disagrees with the fp32 model.

    :attr:`measured` holds what was measured before the refusal (agreement, accuracies), if anything.
    """

    def __init__(self, message: str, measured: Optional[Dict[str, float]] = None):
        self.measured = dict(measured or {})
        super().__init__(message)
