"""A run folder: every file of one run, written atomically and checked for consistency before reuse.

Files and what each records:

``model.pt``
    weights (zeros baked in), masks, the effective config, input shape and class count, every dict sorted (two
    identical runs write the same bytes); loaded with ``torch.load(weights_only=True)``, every key checked
    (:class:`~nni_bap.errors.CorruptModelError` names the one that is wrong) and its config validated like a user's.
``run.json``
    what the pruning measured, with ``config_hash`` (the effective config), ``data_hash`` (the content of the data
    the run read), ``model_hash`` (of ``model.pt``) and ``stats_hash`` (of ``stats.json``).
``stats.json``
    per-step statistics of the pruner.
``model.onnx`` / ``export.json``
    the exported model; ``export.json`` and the ONNX metadata record the ``model.pt`` hash it came from,
    ``export.json`` the ``model.onnx`` (and ``model.int8.onnx``) hash too.
``report.json`` / ``report.md`` / ``curves.png``
    the robustness report, with the hashes of the model, the ONNX file, the evaluation spec and the data it used,
    and of ``report.md`` and ``curves.png``.

A later step reuses a file only when these hashes match the files present (:meth:`RunFolder.check_prune`,
:meth:`RunFolder.check_export`, :meth:`RunFolder.check_report` say why not); writing a new ``model.pt``
removes the files derived from the old one.

A process writes a run folder only while it holds the folder's lock (:meth:`RunFolder.lock`: a second writer
gets one line), which also removes the temporary files a killed writer left. Nothing is written through a
symbolic link: files are replaced, never followed, and a linked folder inside a sweep is refused.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
from torch import nn

from ..errors import CorruptModelError, RunFolderError, brief
from ..models import build_model
from ..utils.atomic import atomic_write, check_no_symlink, ordered, remove_stale_tmp, sha256_file, write_json
from .config import RunConfig

__all__ = ['DERIVED', 'REPORT_FILES', 'RunFolder']

_logger = logging.getLogger(__name__)

#: Files computed from ``model.pt``: stale as soon as a new model is written.
DERIVED = ('model.onnx', 'model.int8.onnx', 'export.json', 'report.json', 'report.md', 'curves.png', 'adv_pgd0.1.npz')
_MODEL_KEYS = {'state_dict', 'masks', 'config', 'input_shape', 'num_classes'}
#: Files of a report whose hashes ``report.json`` records under ``files``.
REPORT_FILES = ('report.md', 'curves.png')
#: Run folders this process holds the lock of: path -> [descriptor, depth] (the lock is reentrant).
_HELD: Dict[str, list] = {}
#: Largest side and class count a stored model may claim.
_MAX_SIDE, _MAX_CLASSES = 1 << 16, 1 << 20


class RunFolder:
    """The files of one run in ``path`` (see the module docstring)."""

    def __init__(self, path: Path | str, root: Optional[Path | str] = None):
        self.path = Path(path)
        #: The folder a sweep made this one in: no folder between it and :attr:`path` may be a symbolic link.
        self.root = Path(root) if root is not None else None

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __repr__(self) -> str:
        return f'RunFolder({str(self.path)!r})'

    def create(self) -> 'RunFolder':
        """Make the folder (and its parents); :class:`RunFolderError` if a file or a symbolic link (below
        :attr:`root`) is in the way."""
        if self.root is not None:
            check_no_symlink(self.root, self.path)
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f'{self.path} exists and is not a folder')
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunFolderError(f'cannot create the folder {self.path}: {exc.strerror or exc}') from None
        return self

    @contextlib.contextmanager
    def lock(self, wait: bool = False) -> Iterator['RunFolder']:
        """Hold the folder's exclusive lock (``flock`` on the folder itself; released when the block ends or the
        process dies) while writing it, reentrant within a process. On taking it, the temporary files left by a
        killed writer are removed. :class:`RunFolderError` when another process holds it (``wait``: block until
        it is free)."""
        key = os.path.realpath(self.path)
        if key in _HELD:
            _HELD[key][1] += 1
            try:
                yield self
            finally:
                _HELD[key][1] -= 1
            return
        fd = self._take(wait)
        _HELD[key] = [fd, 1]
        try:
            stale = remove_stale_tmp(self.path)
            if stale:
                _logger.info('%s: removed %s left by an interrupted write', self.path, ', '.join(stale))
            yield self
        finally:
            del _HELD[key]
            os.close(fd)

    def _take(self, wait: bool) -> int:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, 'O_CLOEXEC', 0))
        except OSError as exc:
            raise RunFolderError(f'cannot open the folder {self.path}: {exc.strerror or exc}') from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            os.close(fd)
            raise RunFolderError(f'{self.path} is in use by another bap process; wait for it to finish or choose '
                                 'another folder') from None
        return fd

    def require(self) -> 'RunFolder':
        """:class:`RunFolderError` unless the folder holds a ``model.pt``."""
        if not self.path.is_dir():
            raise RunFolderError(f'{self.path} is not a folder; give a run folder written by `bap prune`')
        if not (self / 'model.pt').is_file():
            raise RunFolderError(f'{self.path} is not a run folder (no model.pt); run `bap prune` first')
        return self

    def read_json(self, name: str, kind: type = dict) -> Any:
        """A JSON file of the folder holding a ``kind`` (an object by default); :class:`RunFolderError` naming it
        when missing or damaged."""
        path = self / name
        try:
            value = json.loads(path.read_text())
        except FileNotFoundError:
            raise RunFolderError(f'{path} is missing') from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunFolderError(f'{path} is damaged: {exc}') from None
        if not isinstance(value, kind):
            raise RunFolderError(f'{path} is damaged: it holds a {type(value).__name__}, not a {kind.__name__}')
        return value

    def write_json(self, name: str, obj: Any) -> None:
        write_json(self / name, obj)

    def hash(self, name: str) -> Optional[str]:
        """Content hash of a file of the folder, ``None`` when it does not exist."""
        path = self / name
        return sha256_file(path) if path.is_file() else None

    def save_model(self, model: nn.Module, masks: Dict, cfg: RunConfig, input_shape, num_classes: int) -> str:
        """Write ``model.pt`` atomically (every dict sorted), drop the files derived from an older model; returns its
        hash."""
        payload = ordered({'state_dict': model.state_dict(), 'masks': masks, 'config': json.dumps(cfg.to_dict()),
                           'input_shape': [int(v) for v in input_shape], 'num_classes': int(num_classes)})
        atomic_write(self / 'model.pt', lambda fh: torch.save(payload, fh))
        stale = [name for name in DERIVED if (self / name).exists() or (self / name).is_symlink()]
        for name in stale:
            (self / name).unlink()
        if stale:
            _logger.info('%s: new model.pt, removed %s derived from the old one', self.path, ', '.join(stale))
        return self.hash('model.pt')

    def write_run(self, info: Dict[str, Any], config_hash: str, data_hash: Optional[str] = None) -> Dict[str, Any]:
        """``run.json``: ``info`` plus the config hash, the data hash and the hashes of the ``model.pt`` and (when
        there is one) ``stats.json`` present."""
        info = {**info, 'config_hash': config_hash, 'model_hash': self.hash('model.pt')}
        if data_hash is not None:
            info['data_hash'] = data_hash
        if (self / 'stats.json').is_file():
            info['stats_hash'] = self.hash('stats.json')
        self.write_json('run.json', info)
        return info

    def load_model(self) -> Tuple[RunConfig, nn.Module, Dict]:
        """(validated config, plain model in eval mode, masks); checks ``model.pt`` against ``run.json`` and every
        key of it (:class:`CorruptModelError` naming the key that is not what ``bap prune`` writes)."""
        path = self.require() / 'model.pt'
        try:
            saved = torch.load(path, weights_only=True, map_location='cpu')
        except Exception as exc:  # torch raises many types for damaged files
            raise RunFolderError(f'{path} is damaged or not written by bap: {str(exc).splitlines()[0][:200]}') from None
        if not isinstance(saved, dict) or not _MODEL_KEYS <= set(saved):
            raise RunFolderError(f'{path} lacks {sorted(_MODEL_KEYS - set(saved if isinstance(saved, dict) else {}))}: '
                                 'not written by this bap')
        if (self / 'run.json').exists() and self.read_json('run.json').get('model_hash') != self.hash('model.pt'):
            raise RunFolderError(f'{path} does not match {self / "run.json"} (rewritten or damaged): run `bap prune` again')
        shape, classes = _stored_shape(path, saved)
        if not isinstance(saved['config'], str):
            raise CorruptModelError(f'{path}: config must be a JSON text, got {type(saved["config"]).__name__}')
        try:
            cfg = RunConfig.from_dict(json.loads(saved['config']))
        except (ValueError, TypeError, RecursionError) as exc:
            raise RunFolderError(f'{path}: its stored config is invalid: {exc}') from None
        try:
            model = build_model(cfg.model, shape[0], classes, shape[-1])
        except (ValueError, RuntimeError) as exc:
            raise CorruptModelError(f'{path}: model {cfg.model} cannot be built for input_shape {shape} and '
                                    f'{classes} classes: {str(exc).splitlines()[0][:200]}') from None
        _load_weights(path, model, saved['state_dict'], cfg.model)
        return cfg, model.eval(), _stored_masks(path, saved['masks'], model)

    def check_prune(self, config_hash: str, data_hash: Optional[str] = None) -> Optional[str]:
        """Why ``model.pt`` / ``run.json`` (and ``stats.json``) cannot be reused for ``config_hash`` and the data of
        ``data_hash`` (``None``: the data is not checked); ``None`` when they can."""
        if not (self / 'model.pt').is_file() or not (self / 'run.json').is_file():
            return 'no finished pruning (model.pt or run.json missing)'
        try:
            info = self.read_json('run.json')
        except RunFolderError as exc:
            return str(exc)
        if info.get('config_hash') != config_hash:
            return 'the config changed since the run (config hash differs)'
        if data_hash is not None and info.get('data_hash') != data_hash:
            return 'the data changed since the run (data hash differs: the files in data_dir were rewritten)'
        if info.get('model_hash') != self.hash('model.pt'):
            return 'model.pt does not match run.json (rewritten or damaged)'
        if 'stats_hash' in info and info['stats_hash'] != self.hash('stats.json'):
            return 'stats.json is missing or does not match run.json (rewritten or damaged)'
        return None

    def check_export(self) -> Optional[str]:
        """Why ``model.onnx`` / ``export.json`` (and ``model.int8.onnx``) cannot be reused; ``None`` when they can."""
        if not (self / 'export.json').is_file() or not (self / 'model.onnx').is_file():
            return 'no finished export (model.onnx or export.json missing)'
        try:
            exp = self.read_json('export.json')
        except RunFolderError as exc:
            return str(exc)
        if exp.get('model_hash') != self.hash('model.pt'):
            return 'model.onnx was exported from another model.pt'
        if exp.get('onnx_hash') != self.hash('model.onnx'):
            return 'model.onnx does not match export.json (rewritten or damaged)'
        if isinstance(exp.get('int8'), dict) and exp['int8'].get('onnx_hash') != self.hash('model.int8.onnx'):
            return 'model.int8.onnx is missing or does not match export.json (rewritten or damaged)'
        return None

    def recorded_onnx_hash(self, name: str) -> Optional[str]:
        """The hash ``export.json`` records for the folder's own ONNX file ``name`` (``model.onnx``,
        ``model.int8.onnx``); ``None`` for any other file. :class:`RunFolderError` when the folder's own file has no
        record (no ``export.json``, or one that does not list it)."""
        if name not in ('model.onnx', 'model.int8.onnx'):
            return None
        exp = self.read_json('export.json') if (self / 'export.json').exists() else {}
        entry = exp if name == 'model.onnx' else exp.get('int8')
        recorded = entry.get('onnx_hash') if isinstance(entry, dict) else None
        if not isinstance(recorded, str):
            raise RunFolderError(f'{self / name} has no record in {self / "export.json"} (export interrupted?): run '
                                 f'`bap export {self.path}`')
        return recorded

    def check_report(self, spec_hash: str, onnx: bool, data_hash: Optional[str] = None) -> Optional[str]:
        """Why ``report.json`` (with ``report.md`` and ``curves.png``) cannot be reused for the spec ``spec_hash``
        and the data of ``data_hash`` (``None``: not checked); ``None`` when it can."""
        try:
            rep = self.read_json('report.json')
        except RunFolderError as exc:
            return str(exc)
        if rep.get('model_hash') != self.hash('model.pt'):
            return 'report.json evaluated another model.pt'
        if rep.get('spec_hash') != spec_hash:
            return 'the evaluation spec changed'
        if data_hash is not None and rep.get('data_hash') != data_hash:
            return 'report.json evaluated other data (data hash differs)'
        if onnx and (rep.get('onnx') != 'model.onnx' or rep.get('onnx_hash') != self.hash('model.onnx')):
            return 'report.json did not evaluate the present model.onnx'
        files = rep.get('files') if isinstance(rep.get('files'), dict) else {}
        for name in REPORT_FILES:
            if files.get(name) != self.hash(name):
                return f'{name} is missing or does not match report.json (rewritten or damaged)'
        return None

    def record_report_files(self) -> None:
        """Add the hashes of ``report.md`` and ``curves.png`` to ``report.json`` (written last, after them)."""
        rep = self.read_json('report.json')
        self.write_json('report.json', {**rep, 'files': {name: self.hash(name) for name in REPORT_FILES}})


def _is_int(v: Any, low: int, high: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _stored_shape(path: Path, saved: Dict) -> Tuple[Tuple[int, int, int], int]:
    """``input_shape`` (C, H, W) and ``num_classes`` of a ``model.pt``, checked."""
    shape, classes = saved['input_shape'], saved['num_classes']
    if not isinstance(shape, (list, tuple)) or len(shape) != 3 or not all(_is_int(v, 1, _MAX_SIDE) for v in shape):
        raise CorruptModelError(f'{path}: input_shape must be three positive sizes (C, H, W), got {brief(shape)}')
    if not _is_int(classes, 2, _MAX_CLASSES):
        raise CorruptModelError(f'{path}: num_classes must be an integer >= 2, got {brief(classes)}')
    return tuple(shape), classes


def _load_weights(path: Path, model: nn.Module, state: Any, name: str) -> None:
    """``state`` into ``model``: a dict of finite tensors with the model's keys and shapes."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CorruptModelError(f'{path}: state_dict must map names to tensors')
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as exc:
        raise CorruptModelError(f'{path}: state_dict does not fit model {name}: '
                                f'{" ".join(str(exc).split())[:200]}') from None
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if bad:
        raise CorruptModelError(f'{path}: state_dict holds non-finite values in {", ".join(bad[:3])}')


def _stored_masks(path: Path, masks: Any, model: nn.Module) -> Dict:
    """``masks`` checked: ``{module name: {parameter name: tensor of that parameter's shape}}``."""
    if not isinstance(masks, dict):
        raise CorruptModelError(f'{path}: masks must map module names to masks, got a {type(masks).__name__}')
    modules = dict(model.named_modules())
    for name, targets in masks.items():
        module = modules.get(name) if isinstance(name, str) else None
        if module is None or not isinstance(targets, dict):
            raise CorruptModelError(f'{path}: masks names {brief(name)}, not a layer of the model with its masks')
        for target, mask in targets.items():
            param = getattr(module, target, None) if isinstance(target, str) else None
            if not isinstance(mask, torch.Tensor) or not isinstance(param, torch.Tensor) or mask.shape != param.shape:
                raise CorruptModelError(f'{path}: masks[{brief(name)}][{brief(target)}] does not fit the layer '
                                        f'(shape {tuple(param.shape) if isinstance(param, torch.Tensor) else None})')
    return masks
