"""``bap plan``: per-layer channel widths that make the model a given factor faster in onnxruntime on this CPU.

The plan folder holds the dense model's cache (``cache/``, as ``bap prune`` keeps it), ``dense.onnx``, the latency
table (``latency_table.json``: reused while the model's layers, the width options, batch sizes, threads, the CPU
and onnxruntime's version are the same), and the plan:

``config_list.yaml``
    a plain NNI config_list (one entry per layer, ``dependency_group_id`` on residual groups) that ``bap prune``
    and any NNI pruner take as is; its header comments give the predicted latency and FLOPs;
``plan.yaml``
    the run config with that config_list: ``bap prune PLAN/plan.yaml --out RUN``;
``plan.json``
    widths per unit and per layer, predicted and (unless ``verify`` is off) measured latency, FLOPs, importance kept;
``plan.onnx``
    the planned architecture built from the dense weights, measured beside ``dense.onnx``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
import yaml
from torch.utils.data import DataLoader

from ..data import DataSplit
from ..deploy.latency import LatencyTable
from ..deploy.plan import Plan, latency_table, make_plan, verify_plan
from ..errors import ConfigError
from ..export.onnx_export import export_onnx
from ..pruning.compat import nni_config_list
from ..utils.atomic import write_json, write_text
from .config import RunConfig
from .dense import dense_model
from .jobs import load_data
from .run_folder import RunFolder

__all__ = ['TABLE', 'run_plan']

_logger = logging.getLogger(__name__)
TABLE = 'latency_table.json'


def _cached_table(folder: RunFolder) -> Optional[LatencyTable]:
    try:
        return LatencyTable.from_dict(json.loads((folder / TABLE).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _header(plan: Plan) -> str:
    ratio = plan.flops['dense'] / plan.flops['plan']
    lines = [f'channel plan for {plan.speedup:g}x in onnxruntime ({plan.table.get("threads")} thread(s), widths in '
             f'multiples of {plan.align}), made by `bap plan`',
             f'FLOPs {plan.flops["dense"]} -> {plan.flops["plan"]} (ratio {ratio:.2f})']
    for b in plan.batches:
        lines.append(f'batch {b}: dense {plan.dense_ms[b]:.3f} ms -> predicted {plan.predicted_ms[b]:.3f} ms '
                     f'({plan.predicted_speedup[b]:.2f}x)')
    lines += [f'{unit}: {plan.widths[unit]} of {plan.channels[unit]} channels ({", ".join(layers)})'
              for unit, layers in plan.unit_layers.items()]
    return ''.join(f'# {ln}\n' for ln in lines)


def _write(folder: RunFolder, cfg: RunConfig, plan: Plan) -> None:
    write_json(folder / 'plan.json', plan.to_dict())
    header = _header(plan)
    write_text(folder / 'config_list.yaml', header + yaml.safe_dump(plan.config_list, sort_keys=False))
    run = cfg.replace(config_list=tuple(plan.config_list), align=plan.align).to_dict()
    write_text(folder / 'plan.yaml', header + '# run it with: bap prune plan.yaml --out RUN_DIR\n'
               + yaml.safe_dump(run, sort_keys=False))


def _batches(cfg: RunConfig, data: DataSplit):
    gen = torch.Generator().manual_seed(cfg.seed)
    return DataLoader(data.train_set(), batch_size=cfg.batch_size, shuffle=True, generator=gen)


def run_plan(cfg: RunConfig, out: Path, speedup: float, batches: Sequence[int] = (1, 64), threads: int = 1,
             importance: Optional[str] = None, verify: bool = True, data: Optional[DataSplit] = None,
             progress: bool = True) -> Dict:
    """Plan ``cfg``'s model for ``speedup`` x at ``batches`` with ``threads`` onnxruntime threads; write the plan
    folder ``out`` (module docstring). ``importance`` defaults to the base pruner's own (``l1``, ``l2``, ``fpgm``;
    ``taylor`` on request). Returns ``plan.json``'s content."""
    if isinstance(speedup, bool) or not isinstance(speedup, (int, float)) or not speedup > 1:
        raise ConfigError(f'speedup must be a number > 1, got {speedup!r}')
    if not cfg.structured:
        raise ConfigError(f'bap plan needs a channel pruner (base_pruner l1, l2 or fpgm), got {cfg.base_pruner!r}')
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batches) or not batches:
        raise ConfigError(f'batch sizes must be integers >= 1, got {list(batches)}')
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f'threads must be an integer >= 1, got {threads!r}')
    folder = RunFolder(out).create()
    data = data if data is not None else load_data(cfg)
    dense = dense_model(cfg, data, folder / 'cache', progress)
    dense_onnx = str(folder / 'dense.onnx')
    export_onnx(dense, dense_onnx, data.x_test[:8], validation_inputs=data.x_test[:256])
    importance, loader = importance or cfg.base_pruner, _batches(cfg, data)
    config_list, cached = nni_config_list(cfg.nni_config_list()), _cached_table(folder)
    table = latency_table(dense, config_list, data.input_shape, dense_onnx, batches, threads, cfg.align, cached)
    if table is not cached:
        write_json(folder / TABLE, table.to_dict())  # kept even when no plan reaches the speed-up: ask again cheaply
    else:
        _logger.info('latency table reused from %s', folder / TABLE)
    plan, _ = make_plan(dense, config_list, data.input_shape, speedup, dense_onnx, batches, threads, cfg.align,
                        importance, loader, table)
    plan.table['reused'] = table is cached
    if verify:
        plan.measured = verify_plan(dense, plan, dense_onnx, str(folder / 'plan.onnx'), data.x_test[:8], threads,
                                    data=loader)
    _write(folder, cfg, plan)
    return plan.to_dict()
