"""Atomic file writes and content hashes: a file is either complete or absent, never half-written.

Every file of a run folder goes through :func:`atomic_write`: the content is written to a temporary
file in the same folder, flushed and fsynced, then moved into place with ``os.replace`` (which replaces a
symbolic link planted there; it never writes through it). Everything written is :func:`ordered` first (dict keys
sorted), so that identical runs write identical bytes whatever Python's string hashing. A write that fails (a
full disk, a file-size limit) raises :class:`~nni_bap.errors.RunFolderError` naming the file and leaves nothing;
a writer killed outright leaves its temporary file, which :func:`remove_stale_tmp` removes later.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, BinaryIO, Callable, Iterator, List

from ..errors import BapError, RunFolderError

__all__ = ['TMP_PATTERN', 'atomic_path', 'atomic_write', 'canonical_json', 'check_no_symlink', 'open_append',
           'ordered', 'remove_stale_tmp', 'sha256_file', 'sha256_json', 'strict_json', 'write_json', 'write_text']

#: How :func:`atomic_path` names its temporary files (``.model.pt.k2j3h4.tmp`` beside ``model.pt``).
TMP_PATTERN = '.*.tmp'


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
    """Call ``write(fh)`` on a temporary file beside ``path``, fsync it, then move it onto ``path``.

    A ``RuntimeError`` of the writer (torch's zip writer reports a full disk that way) becomes a
    :class:`~nni_bap.errors.RunFolderError` naming ``path``.
    """
    with atomic_path(path) as tmp, open(tmp, 'wb') as fh:
        try:
            write(fh)
        except RuntimeError as exc:
            if isinstance(exc, BapError):
                raise
            detail = ' '.join(str(exc).split()).strip('\'"')[:200] or type(exc).__name__
            raise RunFolderError(f'cannot write {path} (disk full or file too large?): {detail}') from None


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
    """Write ``obj`` as strict JSON (non-finite floats become ``null``, keys sorted), atomically."""
    write_text(path, json.dumps(strict_json(ordered(obj)), indent=indent, allow_nan=False))


def _key(k: Any):
    """Sort key of a dict key: by type name, then by value (or its repr for types that do not compare)."""
    return (type(k).__name__, k if isinstance(k, (str, int, float, bytes)) else repr(k))


def ordered(obj: Any) -> Any:
    """``obj`` with the keys of every ``dict`` / ``OrderedDict`` in it sorted (lists and tuples followed; anything
    else, tensors included, returned as it is). A torch ``state_dict``'s ``_metadata`` is kept.

    Dict order follows insertion, and NNI fills some dicts (the masks) from sets, whose order follows Python's
    string hashing: without this, two identical runs wrote different ``model.pt`` bytes.
    """
    if isinstance(obj, dict) and type(obj) in (dict, collections.OrderedDict):
        items = sorted(((k, ordered(v)) for k, v in obj.items()), key=lambda kv: _key(kv[0]))
        out = type(obj)(items)
        if hasattr(obj, '_metadata'):
            out._metadata = ordered(obj._metadata)
        return out
    if type(obj) in (list, tuple):
        return type(obj)(ordered(v) for v in obj)
    return obj


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


def remove_stale_tmp(folder: Path) -> List[str]:
    """Remove the temporary files :func:`atomic_path` left in ``folder`` when its writer was killed outright; only
    call this while no other process writes there (holding the folder's lock). Returns the names removed."""
    removed = []
    for path in sorted(Path(folder).glob(TMP_PATTERN)):
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def check_no_symlink(root: Path, path: Path) -> None:
    """:class:`~nni_bap.errors.RunFolderError` when ``path`` or a folder between ``root`` (not included) and it is a
    symbolic link: bap writes a run's files only inside the run, never through a link planted in it."""
    root, path = Path(root), Path(path)
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        parts = (path.name,)
        root = path.parent
    current = root
    for part in parts:
        current = current / part
        if current.is_symlink():
            raise RunFolderError(f'{current} is a symbolic link: bap writes only inside a run folder, never through '
                                 'a link; remove it')


def open_append(path: Path, encoding: str = 'utf-8') -> IO[str]:
    """``path`` opened for appending text without following a symbolic link, and only if it is a plain file (a link,
    a FIFO or a device planted there is refused with :class:`~nni_bap.errors.RunFolderError`)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, 'O_CLOEXEC', 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if Path(path).is_symlink():
            raise RunFolderError(f'{path} is a symbolic link: bap writes only inside a run folder, never through a '
                                 'link; remove it') from None
        if os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode):
            raise RunFolderError(f'{path} is not a plain file: remove it') from None
        raise RunFolderError(f'cannot write {path}: {exc.strerror or exc}') from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RunFolderError(f'{path} is not a plain file: remove it')
    os.set_blocking(fd, True)
    return os.fdopen(fd, 'a', encoding=encoding)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
