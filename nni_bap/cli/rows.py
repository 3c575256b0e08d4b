"""The ``aer.json`` row schema, defined once: one row per run folder (pruning process, seed, method, sparsity)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

from ..export.quantize import onnx_precision
from .run_folder import RunFolder

__all__ = ['AER_KEYS', 'aer_row']

#: Keys every aer.json row has (documented in the README).
AER_KEYS = ('method', 'sparsity', 'process', 'schedule', 'seed', 'clean_accuracy', 'clean_interval', 'samples',
            'robust_auc', 'key_points', 'robust_auc_by_attack', 'median_deepfool_l2', 'params', 'nonzero_params',
            'flops', 'onnx', 'precision', 'onnx_max_abs_diff', 'onnx_clean_accuracy', 'onnx_robust_auc', 'prune_seconds',
            'warnings', 'curves')


def aer_row(run_dir: Path, root: Path, process: str | None = None) -> Dict:
    """One ``aer.json`` row from a run folder's ``run.json``, ``export.json`` and ``report.json``.

    ``process`` is the sweep's pruning process (schedule and the share of training it spans, e.g.
    ``agp@0.3``); by default the run's schedule name. ``schedule`` is the schedule name alone.
    The files must be consistent (the sweep checks them with :class:`~nni_bap.cli.run_folder.RunFolder` first).
    """
    folder = RunFolder(run_dir)
    info, rep = folder.read_json('run.json'), folder.read_json('report.json')
    exp = folder.read_json('export.json') if rep.get('onnx') else {}
    eff = exp.get('efficiency', {})
    row = {'method': info['method'], 'sparsity': info['sparsity'], 'process': process or info['schedule'],
           'schedule': info['schedule'],
           'seed': info['seed'], 'clean_accuracy': rep['clean_accuracy'], 'clean_interval': rep['clean_interval'],
           'samples': rep['samples'], 'robust_auc': rep['robust_auc'], 'key_points': rep['key_points'],
           'robust_auc_by_attack': rep['robust_auc_by_attack'],
           'median_deepfool_l2': rep.get('median_deepfool_l2'), 'params': eff.get('params'),
           'nonzero_params': eff.get('nonzero_params'), 'flops': eff.get('flops'),
           'onnx': str((folder / rep['onnx']).relative_to(root)) if exp else None,
           'precision': onnx_precision(str(folder / rep['onnx'])) if rep.get('onnx') else None,
           'onnx_max_abs_diff': exp.get('onnx_max_abs_diff'),
           'onnx_clean_accuracy': rep.get('clean_accuracy_by', {}).get('onnx'),
           'onnx_robust_auc': {k: c['auc'].get('onnx') for k, c in rep['curves'].items()} if exp else None,
           'prune_seconds': info['seconds'], 'warnings': rep.get('warnings', []),
           'curves': {k: {'budgets': c['budgets'], 'accuracy': c['accuracy']['torch'], 'unit': c['unit']}
                      for k, c in rep['curves'].items()}}
    return row
