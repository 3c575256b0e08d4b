"""The jobs behind the ``bap`` command: prune, export, eval, sweep, demo. Each writes into a run folder."""
from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .attacks import PGD
from .config import ConfigError, parse_method, validate_config, with_sparsity
from .data import DataSplit, load_dataset
from .evaluate import DEFAULT_SPEC, evaluate_robustness
from .methods import prune
from .models import build_model
from .report import write_aer, write_report
from .schedule import SCHEDULES
from .training import accuracy, train

__all__ = ['aer_row', 'dense_model', 'load_data', 'load_run', 'run_eval', 'run_export', 'run_prune', 'run_sweep',
           'parse_process', 'save_dense_run']

_logger = logging.getLogger(__name__)
STRUCTURED = ('l1', 'l2', 'fpgm')


def load_data(cfg: Dict) -> DataSplit:
    data = load_dataset(cfg['dataset'], cfg.get('data_dir'))
    return data.subset(cfg.get('train_limit'), cfg.get('test_limit'))


def _build(cfg: Dict, data: DataSplit) -> nn.Module:
    c, s, _ = data.input_shape
    return build_model(cfg['model'], c, data.num_classes, s)


def dense_model(cfg: Dict, data: DataSplit, cache: Optional[Path] = None, progress: bool = True) -> nn.Module:
    """Train (or load from ``cache``) the dense model the pruning starts from."""
    key = f"dense-{cfg['model']}-{cfg['dataset']}-e{cfg['dense_epochs']}-s{cfg['seed']}-n{len(data.x_train)}.pt"
    path = cache / key if cache else None
    model = _build(cfg, data)
    if path is not None and path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    torch.manual_seed(cfg['seed'])
    start = time.perf_counter()
    train(model, data.train_set(), epochs=cfg['dense_epochs'], batch_size=cfg['batch_size'], lr=cfg['lr'],
          seed=cfg['seed'], progress=progress)
    _logger.info('dense %s: test accuracy %.4f after %.1f s', cfg['model'], accuracy(model, data.x_test, data.y_test),
                 time.perf_counter() - start)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return model.eval()


def _config_list(cfg: Dict, model: nn.Module) -> List[Dict]:
    if cfg['base_pruner'] in STRUCTURED:
        from .export.speedup import structured_dependency_config
        return structured_dependency_config(model, cfg['config_list'])
    return copy.deepcopy(cfg['config_list'])


def run_prune(cfg: Dict, out: Path, data: Optional[DataSplit] = None, dense: Optional[nn.Module] = None,
              progress: bool = True, cache: Optional[Path] = None) -> Dict:
    """Prune according to ``cfg``; write ``model.pt`` (weights with zeros, masks, config), ``stats.json``, ``run.json``."""
    cfg = validate_config(cfg)
    out.mkdir(parents=True, exist_ok=True)
    data = data if data is not None else load_data(cfg)
    dense = dense if dense is not None else dense_model(cfg, data, cache, progress)
    family, args = parse_method(cfg['method'], cfg)
    result = prune(dense, data.train_set(), _config_list(cfg, dense), method=family, method_args=args,
                   base_pruner=cfg['base_pruner'], schedule=cfg['schedule'], epochs=cfg['epochs'],
                   total_times=cfg['total_times'], schedule_fraction=cfg['schedule_fraction'],
                   batch_size=cfg['batch_size'], lr=cfg['lr'], seed=cfg['seed'], progress=progress)
    masks = {k: {t: m for t, m in v.items() if m is not None} for k, v in result.masks.items()}
    torch.save({'state_dict': result.model.state_dict(), 'masks': masks, 'config': json.dumps(cfg)}, out / 'model.pt')
    (out / 'stats.json').write_text(json.dumps(result.statistics))
    info = {'method': cfg['method'], 'family': family, 'method_args': args, 'schedule': cfg['schedule'],
            'sparsity': float(cfg['config_list'][0]['sparse_ratio']), 'seed': cfg['seed'], 'seconds': result.seconds,
            'summary': result.summary, 'clean_accuracy': accuracy(result.model, data.x_test, data.y_test)}
    (out / 'run.json').write_text(json.dumps(info, indent=2))
    _logger.info('%s at sparsity %.2f: clean accuracy %.4f, %.1f s', cfg['method'], info['sparsity'],
                 info['clean_accuracy'], result.seconds)
    return info


def save_dense_run(cfg: Dict, dense: nn.Module, out: Path, data: DataSplit) -> None:
    """Write the dense model as a run folder (no masks) so it exports and evaluates like any run."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = {**cfg, 'method': 'natural'}
    torch.save({'state_dict': dense.state_dict(), 'masks': {}, 'config': json.dumps(cfg)}, out / 'model.pt')
    info = {'method': 'dense', 'family': 'dense', 'method_args': {}, 'schedule': '-', 'sparsity': 0.0,
            'seed': cfg['seed'], 'seconds': 0.0, 'summary': {}, 'clean_accuracy': accuracy(dense, data.x_test, data.y_test)}
    (out / 'run.json').write_text(json.dumps(info, indent=2))


def load_run(run_dir: Path):
    """(config, plain model with zeros, masks) of a run folder written by :func:`run_prune`."""
    path = Path(run_dir) / 'model.pt'
    if not path.exists():
        raise FileNotFoundError(f'{run_dir} is not a run folder (no model.pt); run `bap prune` first')
    saved = torch.load(path, weights_only=True)
    cfg = json.loads(saved['config'])
    data = load_data({**cfg, 'train_limit': 1, 'test_limit': 1})
    model = _build(cfg, data)
    model.load_state_dict(saved['state_dict'])
    return cfg, model.eval(), saved['masks']


def run_export(run_dir: Path, data: Optional[DataSplit] = None) -> Dict:
    """Speed the run's model up, convert to ``model.onnx``, validate it on the test split; write ``export.json``."""
    from .export import export_onnx
    run_dir = Path(run_dir)
    cfg, model, masks = load_run(run_dir)
    data = data if data is not None else load_data(cfg)
    info = json.loads((run_dir / 'run.json').read_text()) if (run_dir / 'run.json').exists() else {}
    meta = {'pruning_method': cfg['method'], 'pruning_settings': {k: cfg[k] for k in (
        'base_pruner', 'schedule', 'total_times', 'epochs', 'config_list')} | {'method_args': info.get('method_args')},
        'dataset': cfg['dataset'], 'model': cfg['model']}
    if (run_dir / 'report.json').exists():
        rep = json.loads((run_dir / 'report.json').read_text())
        meta['robustness'] = {'clean_accuracy': rep['clean_accuracy'], 'robust_auc': rep['robust_auc']}
    res = export_onnx(model, str(run_dir / 'model.onnx'), data.x_test[:8], masks=masks,
                      validation_inputs=data.x_test, metadata=meta)
    d = res.to_dict()
    d['onnx'] = 'model.onnx'
    (run_dir / 'export.json').write_text(json.dumps(d, indent=2))
    return d


def run_eval(run_dir: Path, data: Optional[DataSplit] = None, spec: Optional[Dict] = None, progress: bool = True,
             latency: bool = True) -> Dict:
    """Robustness report of a run (torch and, when exported, onnxruntime side by side).

    With ``latency`` (the ``bap eval`` command), an exported run also gets onnxruntime latencies, its
    slowest kernels at batch 64, and the accuracy of the deployed model on PGD examples crafted on torch
    and saved as ``adv_pgd0.1.npz``.
    """
    from .export import OnnxClassifier
    run_dir = Path(run_dir)
    cfg, model, _ = load_run(run_dir)
    data = data if data is not None else load_data(cfg)
    classifiers, ort = {}, None
    if (run_dir / 'model.onnx').exists():
        ort = OnnxClassifier(str(run_dir / 'model.onnx'))
        classifiers['onnx'] = ort
    report = evaluate_robustness(model, data.x_test, data.y_test, spec or cfg.get('eval') or DEFAULT_SPEC,
                                 classifiers=classifiers, progress=progress, seed=cfg['seed'])
    report['model'], report['dataset'], report['method'] = cfg['model'], cfg['dataset'], cfg['method']
    if ort is not None and latency:
        torch.manual_seed(cfg['seed'])
        adv = PGD(model, eps=0.1, steps=20)(data.x_test, data.y_test)
        np.savez(run_dir / 'adv_pgd0.1.npz', x=adv.numpy(), y=data.y_test.numpy())
        report['transfer'] = {'attack': 'pgd eps 0.1 crafted on torch', 'npz': 'adv_pgd0.1.npz',
                              'onnx_accuracy': ort.accuracy_npz(str(run_dir / 'adv_pgd0.1.npz')),
                              'torch_accuracy': accuracy(model, adv, data.y_test)}
        if latency:
            report['latency'] = {f'batch_{b}': ort.latency(batch_size=b, x=data.x_test[:b].numpy()) for b in (1, 64)}
            report['kernels_batch_64'] = ort.profile(data.x_test[:64].numpy(), repeats=20)[:8]
    write_report(report, run_dir)
    return report


def aer_row(run_dir: Path, root: Path) -> Dict:
    """One ``aer.json`` row from a run folder's run.json, export.json and report.json."""
    run_dir = Path(run_dir)
    info = json.loads((run_dir / 'run.json').read_text())
    rep = json.loads((run_dir / 'report.json').read_text())
    exp = json.loads((run_dir / 'export.json').read_text()) if (run_dir / 'export.json').exists() else {}
    eff = exp.get('efficiency', {})
    row = {'method': info['method'], 'sparsity': info['sparsity'], 'schedule': info['schedule'], 'seed': info['seed'],
           'clean_accuracy': rep['clean_accuracy'], 'robust_auc': rep['robust_auc'],
           'median_deepfool_l2': rep.get('median_deepfool_l2'), 'params': eff.get('params'),
           'nonzero_params': eff.get('nonzero_params'), 'flops': eff.get('flops'),
           'onnx': str((run_dir / 'model.onnx').relative_to(root)) if exp else None,
           'onnx_max_abs_diff': exp.get('onnx_max_abs_diff'),
           'onnx_clean_accuracy': rep.get('clean_accuracy_by', {}).get('onnx'),
           'onnx_robust_auc': {k: c['auc'].get('onnx') for k, c in rep['curves'].items()} if exp else None,
           'prune_seconds': info['seconds'], 'warnings': rep.get('warnings', []),
           'curves': {k: {'budgets': c['budgets'], 'accuracy': c['accuracy']['torch'], 'unit': c['unit']}
                      for k, c in rep['curves'].items()}}
    return row


def parse_process(process: str, default_fraction: float):
    """``'agp'`` or ``'agp@0.3'`` (schedule, and the fraction of training it spans) -> (schedule, fraction)."""
    schedule, _, frac = process.partition('@')
    if schedule not in SCHEDULES:
        raise ConfigError(f'unknown schedule {schedule!r} in {process!r}; choose one of {sorted(SCHEDULES)}')
    try:
        fraction = float(frac) if frac else float(default_fraction)
    except ValueError:
        raise ConfigError(f'cannot read the fraction of {process!r} (expected e.g. agp@0.3)') from None
    if not 0 < fraction <= 1:
        raise ConfigError(f'schedule fraction of {process!r} must be in (0, 1]')
    return schedule, fraction


def run_sweep(cfg: Dict, sparsities: Sequence[float], methods: Sequence[str], out: Path, progress: bool = True,
              export: bool = True, seeds: Sequence[int] = (0,), schedules: Optional[Sequence[str]] = None,
              resume: bool = False, method_major: bool = False) -> List[Dict]:
    """Every (pruning process, seed, method, sparsity): prune, export, evaluate; then ``aer.json``, ``aer.csv``,
    ``aer.png``. A process is a schedule name with an optional fraction of training: ``'agp@0.3'``.
    With ``resume``, runs whose folder already holds a report are read back instead of redone; with
    ``method_major``, all processes and seeds of one method run before the next method."""
    base = validate_config(cfg)
    for process in schedules or []:
        parse_process(process, base['schedule_fraction'])
    for m in methods:
        parse_method(m, base)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(base)
    rows, dense_rows = [], []
    for seed in seeds:
        dense = dense_model({**base, 'seed': seed}, data, out / 'cache', progress)
        dense_dir = out / f'dense-seed{seed}'
        save_dense_run({**base, 'seed': seed}, dense, dense_dir, data)
        if export:
            run_export(dense_dir, data)
        run_eval(dense_dir, data, progress=progress, latency=False)
        dense_rows.append(aer_row(dense_dir, out))
    (out / 'dense.json').write_text(json.dumps(dense_rows, indent=2))
    combos = [(process, seed, method, sp) for process in schedules or [base['schedule']] for seed in seeds
              for method in methods for sp in sparsities]
    if method_major:  # every process of one method before the next method: partial runs stay comparable
        combos.sort(key=lambda c: (list(methods).index(c[2]), c[1], c[3]))
    for process, seed, method, sp in combos:
        schedule, fraction = parse_process(process, base['schedule_fraction'])
        scfg = {**base, 'seed': seed, 'schedule': schedule, 'schedule_fraction': fraction}
        dense = dense_model(scfg, data, out / 'cache', progress)
        run_dir = out / f'{process}-seed{seed}' / f'{method}-{sp:g}'
        rcfg = with_sparsity({**scfg, 'method': method}, sp)
        start = time.perf_counter()
        if not (resume and (run_dir / 'report.json').exists()):
            run_prune(rcfg, run_dir, data=data, dense=dense, progress=progress)
            if export:
                run_export(run_dir, data)
            run_eval(run_dir, data, progress=progress, latency=False)
        row = aer_row(run_dir, out)
        row['schedule'] = process
        rows.append(row)
        _logger.info('%s/%s sparsity %g: clean %.4f, AUC %s (%.1f s)', process, method, sp, row['clean_accuracy'],
                     {k: round(v, 3) for k, v in row['robust_auc'].items()}, time.perf_counter() - start)
    write_aer(rows, out)
    return rows
