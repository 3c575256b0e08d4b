"""The dense model pruning starts from, cached as a run folder keyed on everything that determines it."""
from __future__ import annotations

import hashlib
import logging
import time
import weakref
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ..data import DataSplit
from ..models import build_model
from ..pruning.training import accuracy, train
from ..utils.atomic import sha256_json
from ..utils.device import resolve_device
from ..utils.distributed import agree, is_main, world_size
from .config import RunConfig
from .run_folder import RunFolder

__all__ = ['DENSE_KEYS', 'build', 'data_hash', 'dense_key', 'dense_model', 'save_dense_run']

_logger = logging.getLogger(__name__)

#: Config keys that determine the dense model (with the training data's content).
DENSE_KEYS = ('model', 'dataset', 'data_dir', 'train_limit', 'dense_epochs', 'batch_size', 'lr', 'seed')


def build(cfg: RunConfig, data: DataSplit) -> nn.Module:
    """A fresh model of ``cfg.model`` for ``data``'s input shape and class count."""
    c, s, _ = data.input_shape
    return build_model(cfg.model, c, data.num_classes, s)


def _fingerprint(data: DataSplit) -> str:
    h = hashlib.sha256()
    for t in (data.x_train, data.y_train):
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


_HASHES: Dict[int, Tuple[weakref.ref, str]] = {}


def data_hash(data: DataSplit) -> str:
    """Hash of everything a run reads from its data: train and test inputs and labels (after ``train_limit`` /
    ``test_limit``). A run's identity (``run.json``'s ``data_hash``): the same path with other content is other data.
    Computed once per :class:`DataSplit` object (its tensors are not changed in place)."""
    hit = _HASHES.get(id(data))
    if hit is not None and hit[0]() is data:
        return hit[1]
    h = hashlib.sha256()
    for t in (data.x_train, data.y_train, data.x_test, data.y_test):
        h.update(str((tuple(t.shape), t.dtype)).encode())
        h.update(t.contiguous().numpy().tobytes())
    _HASHES[id(data)] = (weakref.ref(data), h.hexdigest())
    return h.hexdigest()


def dense_key(cfg: RunConfig, data: DataSplit) -> str:
    """Hash of the dense-model settings (:data:`DENSE_KEYS`), of the training data and, when trained by several
    processes (its batches differ), of their number."""
    extra = {'processes': world_size()} if world_size() > 1 else {}
    return sha256_json({**{k: getattr(cfg, k) for k in DENSE_KEYS}, 'train_data': _fingerprint(data), **extra})


def _cached(folder: Optional[RunFolder], key: str) -> Optional[nn.Module]:
    """The cached dense model when rank 0 finds it valid (every process then loads it), else ``None``."""
    reason = folder.check_prune(key) if folder is not None else 'no cache'
    if not agree(reason is None):
        if folder is not None and folder.path.exists() and is_main():
            _logger.info('dense cache %s not reused: %s', folder.path, reason)
        return None
    _logger.info('dense model from the cache %s', folder.path)
    return folder.load_model()[1]


def dense_model(cfg: RunConfig, data: DataSplit, cache: Optional[Path] = None, progress: bool = True,
                device: Optional[torch.device] = None) -> nn.Module:
    """Train the dense model (seeded before it is built) on ``device`` (default: the config's), or load it from
    the run folder under ``cache``. Returned on the CPU, in eval mode. In several processes it is trained data
    parallel and only rank 0 writes the cache."""
    key = dense_key(cfg, data)
    folder = RunFolder(Path(cache) / f'dense-{key[:16]}', root=Path(cache).parent) if cache is not None else None
    model = _cached(folder, key)
    if model is not None:
        return model
    device = device if device is not None else resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build(cfg, data).to(device)
    start = time.perf_counter()
    train(model, data.train_set(), epochs=cfg.dense_epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
          progress=progress)
    acc = accuracy(model, data.x_test, data.y_test)
    _logger.info('dense %s: test accuracy %.4f after %.1f s', cfg.model, acc, time.perf_counter() - start)
    model.cpu()
    if folder is not None and is_main():
        with folder.create().lock(wait=True):  # two sweeps may train the same dense model: one writes at a time
            folder.save_model(model, {}, cfg.replace(method='natural'), data.input_shape, data.num_classes)
            folder.write_run({'kind': 'dense cache', 'clean_accuracy': acc}, key)
    return model.eval()


def save_dense_run(cfg: RunConfig, dense: nn.Module, out: Path, data: DataSplit) -> RunFolder:
    """Write the dense model as a run folder (no masks) so it exports and evaluates like any run."""
    cfg = cfg.replace(method='natural')
    folder = RunFolder(out, root=Path(out).parent).create()
    info = {'method': 'dense', 'family': 'dense', 'method_args': {}, 'schedule': '-', 'sparsity': 0.0,
            'seed': cfg.seed, 'seconds': 0.0, 'summary': {}, 'clean_accuracy': accuracy(dense, data.x_test, data.y_test)}
    with folder.lock():
        if (folder.check_prune(cfg.config_hash(), data_hash(data)) is None
                and folder.read_json('run.json').get('weights') == _weights(dense)):
            return folder
        folder.save_model(dense, {}, cfg, data.input_shape, data.num_classes)
        folder.write_run({**info, 'weights': _weights(dense)}, cfg.config_hash(), data_hash(data))
    return folder


def _weights(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()
