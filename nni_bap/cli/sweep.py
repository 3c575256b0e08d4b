"""``bap sweep``: every (pruning process, seed, method, sparsity, base pruner) pruned, exported and evaluated, then the
AER table.

With ``resume`` a run is reused stage by stage (prune, export, eval) only while its run folder is complete
and consistent with the config (see :class:`~nni_bap.cli.run_folder.RunFolder`); the log says why a stage reruns.
"""
from __future__ import annotations

import logging
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..data import DataSplit
from ..utils.atomic import check_no_symlink, write_json
from ..utils.device import resolve_device
from .config import RunConfig, parse_process
from .dense import data_hash, dense_model, save_dense_run
from .jobs import check_data_fit, load_data, run_eval, run_export, run_prune, run_spec
from .report import write_aer
from .rows import aer_row
from .run_folder import RunFolder

__all__ = ['canonical_process', 'ensure_run', 'run_config', 'run_name', 'run_sweep', 'sweep_plan']

_logger = logging.getLogger(__name__)
#: (process, seed, method, sparsity, base pruner)
Combo = Tuple[str, int, str, float, str]
#: The file whose presence says a stage ran before (a stage redone without it is a first run, not logged as redone).
_STAGE_FILES = {'prune': 'run.json', 'export': 'export.json', 'eval': 'report.json'}


def sweep_plan(base: RunConfig, sparsities: Sequence[float], methods: Sequence[str], seeds: Sequence[int],
               processes: Optional[Sequence[str]], method_major: bool = False,
               base_pruners: Optional[Sequence[str]] = None) -> List[Combo]:
    """Every (process, seed, method, sparsity, base pruner), validated up front; method-major keeps partial grids
    comparable. ``base_pruners`` default to the config's."""
    processes = list(processes or [base.schedule])
    pruners = list(base_pruners or [base.base_pruner])
    combos = [(p, seed, m, float(sp), bp) for p in processes for seed in seeds for bp in pruners for m in methods
              for sp in sparsities]
    for process, seed, method, sp, bp in combos:
        run_config(base, process, seed, method, sp, bp)
    if method_major:
        combos.sort(key=lambda c: (list(methods).index(c[2]), c[1], pruners.index(c[4]), c[3]))
    return combos


def run_config(base: RunConfig, process: str, seed: int, method: str, sparsity: float,
               base_pruner: Optional[str] = None) -> RunConfig:
    """The configuration of one run of a sweep (validated); ``base_pruner`` defaults to the config's."""
    schedule, fraction = parse_process(process, base.schedule_fraction)
    return base.replace(seed=seed, schedule=schedule, schedule_fraction=fraction, method=method,
                        base_pruner=base_pruner or base.base_pruner).with_sparsity(sparsity)


def canonical_process(process: str, base: RunConfig) -> str:
    """A process as ``schedule@fraction`` (``'agp'`` -> ``'agp@0.7'`` with the config's fraction)."""
    schedule, fraction = parse_process(process, base.schedule_fraction)
    return f'{schedule}@{fraction:g}'


def run_name(method: str, sparsity: float, base_pruner: str, base: RunConfig) -> str:
    """A run's folder inside ``<process>-seed<N>/``: ``<method>-<sparsity>``, with ``-<base pruner>`` after the method
    when that is not the config's base pruner (``bap-l1-0.5``)."""
    return f'{method}-{sparsity:g}' if base_pruner == base.base_pruner else f'{method}-{base_pruner}-{sparsity:g}'


def ensure_run(folder: RunFolder, cfg: RunConfig, data: DataSplit, dense: Callable[[], nn.Module], export: bool,
               progress: bool, resume: bool, device: Optional[torch.device] = None) -> str:
    """Bring one run folder up to date on ``device`` (default: the config's), holding its lock: the first stale
    stage (a changed config or data, a missing or damaged file of the stage) and every stage after it are redone.

    Returns what was done: ``'pruned'``, ``'exported'``, ``'evaluated'`` or ``'reused'``.
    """
    with folder.create().lock():
        digest = data_hash(data)
        redo_prune = folder.check_prune(cfg.config_hash(), digest) if resume else 'not resuming'
        redo_export = (redo_prune or folder.check_export()) if export else None
        spec_hash = run_spec(cfg, data.input_shape).hash
        redo_eval = redo_prune or redo_export or folder.check_report(spec_hash, onnx=export, data_hash=digest)
        stage = 'prune' if redo_prune else 'export' if redo_export else 'eval'
        if resume and redo_eval and (folder / _STAGE_FILES[stage]).exists():
            _logger.info('%s: redone from %s: %s', folder.path, stage, redo_eval)
        if redo_prune:  # with resume, an interrupted pruning continues from its checkpoint
            run_prune(cfg, folder.path, data=data, dense=dense(), progress=progress, resume=resume, device=device)
        if redo_export:
            run_export(folder.path, data)
        if redo_eval:  # on this sweep's device, whatever device the run was pruned on
            run_eval(folder.path, data, progress=progress, latency=False, device=device)
    return 'pruned' if redo_prune else 'exported' if redo_export else 'evaluated' if redo_eval else 'reused'


def _dense_rows(base: RunConfig, seeds: Sequence[int], data: DataSplit, out: Path, progress: bool, export: bool,
                device: torch.device) -> List[Dict]:
    rows = []
    for seed in seeds:
        cfg = base.replace(seed=seed)
        dense = dense_model(cfg, data, out / 'cache', progress, device)
        folder = save_dense_run(cfg, dense, out / f'dense-seed{seed}', data)
        ensure_run(folder, cfg.replace(method='natural'), data, lambda: dense, export, progress, True, device)
        rows.append(aer_row(folder.path, out, latency=export))
    return rows


def run_sweep(cfg: RunConfig, sparsities: Sequence[float], methods: Sequence[str], out: Path, progress: bool = True,
              export: bool = True, seeds: Sequence[int] = (0,), processes: Optional[Sequence[str]] = None,
              resume: bool = False, method_major: bool = False, device: Optional[torch.device] = None,
              base_pruners: Optional[Sequence[str]] = None) -> List[Dict]:
    """Every (pruning process, seed, method, sparsity, base pruner): prune, export, evaluate; then ``aer.json``,
    ``aer.csv``, ``aer.png`` and ``dense.json``. A process is a schedule name with an optional fraction of training
    (``'agp@0.3'``; rows say it in full, ``agp@0.7``). ``base_pruners`` (default: the config's) adds channel
    pruners beside unstructured ones (folders :func:`run_name`). With ``resume``, finished and consistent runs in
    ``out`` are reused; with ``method_major``, all processes and seeds of one method run before the next method.
    Everything computes on ``device`` (default: the config's). Rows of exported runs carry the onnxruntime latency
    measured now (``latency_ms``)."""
    base, device = cfg, device if device is not None else resolve_device(cfg.device)
    combos = sweep_plan(base, sparsities, methods, seeds, processes, method_major, base_pruners)
    with RunFolder(out).create().lock() as sweep:
        return _run_all(base, combos, sweep.path, progress, export, seeds, resume, device)


def _run_all(base: RunConfig, combos: List[Combo], out: Path, progress: bool, export: bool, seeds: Sequence[int],
             resume: bool, device: torch.device) -> List[Dict]:
    """The sweep's runs in ``out`` (locked by the caller), then its tables."""
    check_no_symlink(out, out / 'cache')
    data = load_data(base)
    for process, seed, method, sp, bp in combos:  # every run's settings against the data, before any training
        check_data_fit(run_config(base, process, seed, method, sp, bp), data)
    dense_rows = _dense_rows(base, seeds, data, out, progress, export, device)
    write_json(out / 'dense.json', dense_rows)

    @lru_cache(maxsize=None)
    def dense(process: str, seed: int) -> nn.Module:
        return dense_model(run_config(base, process, seed, 'natural', 0.5), data, out / 'cache', progress, device)

    rows = []
    for process, seed, method, sp, bp in combos:
        start = time.perf_counter()
        folder = RunFolder(out / f'{process}-seed{seed}' / run_name(method, sp, bp, base), root=out)
        rcfg = run_config(base, process, seed, method, sp, bp)
        done = ensure_run(folder, rcfg, data, lambda: dense(process, seed), export, progress, resume, device)
        row = aer_row(folder.path, out, process=canonical_process(process, base), base_pruner=bp, latency=export)
        rows.append(row)
        _logger.info('%s/%s/%s sparsity %g (%s): clean %.4f, AUC %s (%.1f s)', process, bp, method, sp, done,
                     row['clean_accuracy'], {k: round(v, 3) for k, v in row['robust_auc'].items()},
                     time.perf_counter() - start)
    write_aer(rows, out, dense_rows)
    return rows
