"""A run folder: every file of one run, written atomically and checked for consistency before reuse.

Files and what each records:

``model.pt``
    weights (zeros baked in), masks, the effective config, input shape and class count; loaded with
    ``torch.load(weights_only=True)`` and its config validated like a user's.
``run.json``
    what the pruning measured, with ``config_hash`` (the effective config) and ``model_hash`` (of ``model.pt``).
``stats.json``
    per-step statistics of the pruner.
``model.onnx`` / ``export.json``
    the exported model; ``export.json`` and the ONNX metadata record the ``model.pt`` hash it came from,
    ``export.json`` the ``model.onnx`` hash too.
``report.json`` / ``report.md`` / ``curves.png``
    the robustness report, with the hashes of the model, the ONNX file and the evaluation spec it used.

A later step reuses a file only when these hashes match the files present (:meth:`RunFolder.check_prune`,
:meth:`RunFolder.check_export`, :meth:`RunFolder.check_report` say why not); writing a new ``model.pt``
removes the files derived from the old one.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from ..errors import RunFolderError
from ..models import build_model
from ..utils.atomic import atomic_write, sha256_file, write_json
from .config import RunConfig

__all__ = ['DERIVED', 'RunFolder']

_logger = logging.getLogger(__name__)

#: Files computed from ``model.pt``: stale as soon as a new model is written.
DERIVED = ('model.onnx', 'model.int8.onnx', 'export.json', 'report.json', 'report.md', 'curves.png', 'adv_pgd0.1.npz')
_MODEL_KEYS = {'state_dict', 'masks', 'config', 'input_shape', 'num_classes'}


class RunFolder:
    """The files of one run in ``path`` (see the module docstring)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __repr__(self) -> str:
        return f'RunFolder({str(self.path)!r})'

    def create(self) -> 'RunFolder':
        """Make the folder (and its parents); :class:`RunFolderError` if a file is in the way."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f'{self.path} exists and is not a folder')
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunFolderError(f'cannot create the folder {self.path}: {exc.strerror or exc}') from None
        return self

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
        """Write ``model.pt`` atomically, drop the files derived from an older model; returns its hash."""
        payload = {'state_dict': model.state_dict(), 'masks': masks, 'config': json.dumps(cfg.to_dict()),
                   'input_shape': [int(v) for v in input_shape], 'num_classes': int(num_classes)}
        atomic_write(self / 'model.pt', lambda fh: torch.save(payload, fh))
        stale = [name for name in DERIVED if (self / name).exists()]
        for name in stale:
            (self / name).unlink()
        if stale:
            _logger.info('%s: new model.pt, removed %s derived from the old one', self.path, ', '.join(stale))
        return self.hash('model.pt')

    def write_run(self, info: Dict[str, Any], config_hash: str) -> Dict[str, Any]:
        """``run.json``: ``info`` plus the config hash and the hash of the ``model.pt`` present."""
        info = {**info, 'config_hash': config_hash, 'model_hash': self.hash('model.pt')}
        self.write_json('run.json', info)
        return info

    def load_model(self) -> Tuple[RunConfig, nn.Module, Dict]:
        """(validated config, plain model in eval mode, masks); checks ``model.pt`` against ``run.json``."""
        path = self.require() / 'model.pt'
        try:
            saved = torch.load(path, weights_only=True, map_location='cpu')
        except Exception as exc:  # torch raises many types for damaged files
            raise RunFolderError(f'{path} is damaged or not written by bap: {str(exc).splitlines()[0]}') from None
        if not isinstance(saved, dict) or not _MODEL_KEYS <= set(saved):
            raise RunFolderError(f'{path} lacks {sorted(_MODEL_KEYS - set(saved or {}))}: not written by this bap')
        if (self / 'run.json').exists() and self.read_json('run.json').get('model_hash') != self.hash('model.pt'):
            raise RunFolderError(f'{path} does not match {self / "run.json"} (rewritten or damaged): run `bap prune` again')
        try:
            cfg = RunConfig.from_dict(json.loads(saved['config']))
        except (ValueError, TypeError) as exc:
            raise RunFolderError(f'{path}: its stored config is invalid: {exc}') from None
        c, size = saved['input_shape'][0], saved['input_shape'][-1]
        model = build_model(cfg.model, c, saved['num_classes'], size)
        try:
            model.load_state_dict(saved['state_dict'])
        except (RuntimeError, KeyError) as exc:
            raise RunFolderError(f'{path}: weights do not fit model {cfg.model}: {str(exc).splitlines()[0]}') from None
        return cfg, model.eval(), saved['masks']

    def check_prune(self, config_hash: str) -> Optional[str]:
        """Why ``model.pt`` / ``run.json`` cannot be reused for ``config_hash``; ``None`` when they can."""
        if not (self / 'model.pt').is_file() or not (self / 'run.json').is_file():
            return 'no finished pruning (model.pt or run.json missing)'
        try:
            info = self.read_json('run.json')
        except RunFolderError as exc:
            return str(exc)
        if info.get('config_hash') != config_hash:
            return 'the config changed since the run (config hash differs)'
        if info.get('model_hash') != self.hash('model.pt'):
            return 'model.pt does not match run.json (rewritten or damaged)'
        return None

    def check_export(self) -> Optional[str]:
        """Why ``model.onnx`` / ``export.json`` cannot be reused; ``None`` when they can."""
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
        return None

    def check_report(self, spec_hash: str, onnx: bool) -> Optional[str]:
        """Why ``report.json`` cannot be reused for the spec ``spec_hash``; ``None`` when it can."""
        try:
            rep = self.read_json('report.json')
        except RunFolderError as exc:
            return str(exc)
        if rep.get('model_hash') != self.hash('model.pt'):
            return 'report.json evaluated another model.pt'
        if rep.get('spec_hash') != spec_hash:
            return 'the evaluation spec changed'
        if onnx and (rep.get('onnx') != 'model.onnx' or rep.get('onnx_hash') != self.hash('model.onnx')):
            return 'report.json did not evaluate the present model.onnx'
        return None
