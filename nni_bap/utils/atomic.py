"""Atomic file writes and content hashes: a file is either complete or absent, never half-written.

Every file of a run folder goes through :func:`atomic_write`: the content is written to a temporary
file in the same folder, flushed and fsynced, then moved into place with ``os.replace``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from ..errors import RunFolderError

__all__ = ['atomic_path', 'atomic_write', 'canonical_json', 'sha256_file', 'sha256_json', 'strict_json', 'write_json',
           'write_text']


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[str]:
    """A temporary path beside ``path`` to write to; when the block ends without an error the file is fsynced and
    moved onto ``path``, otherwise removed."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    except OSError as exc:
        raise RunFolderError(f'cannot write {path}: {exc.strerror or exc}') from None
    os.close(fd)
    try:
        yield tmp
        with open(tmp, 'rb') as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        raise RunFolderError(f'cannot write {path}: {exc.strerror or exc}') from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(fh)`` on a temporary file beside ``path``, fsync it, then move it onto ``path``."""
    with atomic_path(path) as tmp, open(tmp, 'wb') as fh:
        write(fh)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    atomic_write(path, lambda fh: fh.write(text.encode('utf-8')))


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``None`` (JSON has no NaN or infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as strict JSON (non-finite floats become ``null``), atomically."""
    write_text(path, json.dumps(strict_json(obj), indent=indent, allow_nan=False))


def canonical_json(obj: Any) -> str:
    """One text per value: sorted keys, no spaces, strict JSON."""
    return json.dumps(strict_json(obj), sort_keys=True, separators=(',', ':'), allow_nan=False)


def sha256_json(obj: Any) -> str:
    """Content hash of a JSON-able value (independent of key order)."""
    return hashlib.sha256(canonical_json(obj).encode('utf-8')).hexdigest()


def sha256_file(path: Path) -> str:
    """Content hash of a file."""
    h = hashlib.sha256()
    with open(path, 'rb') as fh:
        for block in iter(lambda: fh.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
