"""The ``aer.json`` row schema, defined once: one row per run folder (pruning process, seed, method, sparsity, base
pruner)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

from ..export.quantize import onnx_precision
from ..export.runtime import OnnxClassifier
from .run_folder import RunFolder

__all__ = ['AER_KEYS', 'LATENCY', 'aer_row', 'onnx_latency_ms']

#: Keys every aer.json row has (documented in the README).
AER_KEYS = ('method', 'base_pruner', 'sparsity', 'process', 'schedule', 'seed', 'clean_accuracy', 'clean_interval',
            'samples', 'robust_auc', 'key_points', 'robust_auc_by_attack', 'median_deepfool_l2', 'params',
            'nonzero_params', 'flops', 'file_bytes', 'latency_ms', 'bn_drift', 'onnx', 'precision', 'onnx_max_abs_diff',
            'onnx_clean_accuracy', 'onnx_robust_auc', 'prune_seconds', 'warnings', 'curves')
#: How ``latency_ms`` is measured: onnxruntime, one thread, a batch of ``batch_size`` uniform random inputs; the
#: lowest of ``rounds`` medians of ``repeats`` runs (other work on the machine only ever adds time).
LATENCY = {'batch_size': 64, 'threads': 1, 'repeats': 10, 'rounds': 10}


def onnx_latency_ms(path: Path) -> float:
    """onnxruntime latency (ms) of the model at ``path`` as :data:`LATENCY` says."""
    clf = OnnxClassifier(str(path), threads=LATENCY['threads'])
    return min(float(clf.latency(batch_size=LATENCY['batch_size'], repeats=LATENCY['repeats'])['median_ms'])
               for _ in range(LATENCY['rounds']))


def _recorded_base_pruner(exp: Dict) -> Optional[str]:
    """The base pruner the export recorded in its metadata (``None`` without an export)."""
    settings = exp.get('metadata', {}).get('pruning_settings')
    return json.loads(settings).get('base_pruner') if isinstance(settings, str) else None


def aer_row(run_dir: Path, root: Path, process: str | None = None, base_pruner: str | None = None,
            latency: bool = False) -> Dict:
    """One ``aer.json`` row from a run folder's ``run.json``, ``export.json`` and ``report.json``.

    ``process`` is the sweep's pruning process (schedule and the share of training it spans, e.g.
    ``agp@0.3``); by default the run's schedule name. ``schedule`` is the schedule name alone. ``base_pruner``
    defaults to the one the export recorded (``None`` for the dense reference). With ``latency`` the exported
    model's onnxruntime latency is measured now (:data:`LATENCY`); else ``latency_ms`` is ``None``.
    The files must be consistent (the sweep checks them with :class:`~nni_bap.cli.run_folder.RunFolder` first).
    """
    folder = RunFolder(run_dir)
    info, rep = folder.read_json('run.json'), folder.read_json('report.json')
    exp = folder.read_json('export.json') if rep.get('onnx') else {}
    eff = exp.get('efficiency', {})
    dense = info.get('family') == 'dense'
    row = {'method': info['method'], 'base_pruner': None if dense else base_pruner or _recorded_base_pruner(exp),
           'sparsity': info['sparsity'], 'process': process or info['schedule'],
           'schedule': info['schedule'],
           'seed': info['seed'], 'clean_accuracy': rep['clean_accuracy'], 'clean_interval': rep['clean_interval'],
           'samples': rep['samples'], 'robust_auc': rep['robust_auc'], 'key_points': rep['key_points'],
           'robust_auc_by_attack': rep['robust_auc_by_attack'],
           'median_deepfool_l2': rep.get('median_deepfool_l2'), 'params': eff.get('params'),
           'nonzero_params': eff.get('nonzero_params'), 'flops': eff.get('flops'), 'file_bytes': eff.get('file_bytes'),
           'latency_ms': onnx_latency_ms(folder / rep['onnx']) if latency and exp else None,
           'bn_drift': exp.get('bn_drift'),
           'onnx': str((folder / rep['onnx']).relative_to(root)) if exp else None,
           'precision': onnx_precision(str(folder / rep['onnx'])) if rep.get('onnx') else None,
           'onnx_max_abs_diff': exp.get('onnx_max_abs_diff'),
           'onnx_clean_accuracy': rep.get('clean_accuracy_by', {}).get('onnx'),
           'onnx_robust_auc': {k: c['auc'].get('onnx') for k, c in rep['curves'].items()} if exp else None,
           'prune_seconds': info['seconds'], 'warnings': rep.get('warnings', []),
           'curves': {k: {'budgets': c['budgets'], 'accuracy': c['accuracy']['torch'], 'unit': c['unit']}
                      for k, c in rep['curves'].items()}}
    return row
