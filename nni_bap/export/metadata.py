"""The ``metadata_props`` of an ONNX file: the one reader and writer (values that are not strings are JSON)."""
from __future__ import annotations

import json
from typing import Dict, Mapping

__all__ = ['encode', 'read_metadata', 'write_metadata']


def encode(meta: Mapping[str, object]) -> Dict[str, str]:
    """``meta`` with every value that is not a string JSON-encoded (ONNX metadata holds strings only)."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def read_metadata(path: str) -> Dict[str, str]:
    """The ``metadata_props`` of the ONNX file at ``path`` (weights not loaded)."""
    import onnx  # onnx loads in about a second; the torch-free runtime needs it only here
    return {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}


def write_metadata(path: str, meta: Mapping[str, object], replace: bool = False) -> None:
    """Add ``meta`` (encoded by :func:`encode`) to the ``metadata_props`` of the file at ``path``, in place; with
    ``replace`` the file's old entries go first."""
    import onnx  # see read_metadata
    model = onnx.load(path)
    old = {} if replace else {p.key: p.value for p in model.metadata_props}
    del model.metadata_props[:]
    for k, v in {**old, **encode(meta)}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, path)
