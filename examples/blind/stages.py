"""The stages of issue 20's study: their grids, data, jobs, run folders and rows (no training starts here).

Screening and selection read MNIST t10k images 0-7999 only (train 0-5999, validation 6000-7999; later images
are dropped as the file is read, and the stage asserts it); confirmation trains on 0-5999 and evaluates on the
test images 8000-9999. Every model: LeNet-5 trained dense for 8 epochs (one per seed), pruned for 15 epochs with
the schedule over the first 10, evaluated by the library's worst case (FMN, APGD-CE/DLR, DeepFool for L2) with
APGD at every budget of both grids.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

import torch

from nni_bap.cli.config import RunConfig
from nni_bap.cli.dense import dense_model
from nni_bap.cli.rows import aer_row
from nni_bap.cli.run_folder import RunFolder
from nni_bap.cli.sweep import ensure_run, run_config
from nni_bap.data import DataSplit, read_idx

from . import protocol as p

__all__ = ['ALLOCATION', 'BENCH', 'CONFIG', 'MNIST', 'RESULTS', 'ROOT', 'SCREEN', 'SCREEN_PHASES', 'SELECTION_VARIANTS',
           'base_config', 'confirmation_entries', 'jobs', 'ratios', 'rows', 'run_job', 'selected', 'selection_entries',
           'stage_data']

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / 'examples' / 'results' / 'blind_budgets'
MNIST = ROOT.parent / 'shared' / 'data' / 'mnist'
BENCH = ROOT / 'benchmarks' / 'blind_budgets_step.json'

#: The regime of the claims reproduction (LeNet-5, 8 dense epochs, 15 pruning epochs, schedule over the first 10).
CONFIG = {'model': 'lenet5', 'dataset': 'mnist', 'data_dir': str(MNIST), 'base_pruner': 'level',
          'config_list': [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.9}], 'total_times': 10,
          'dense_epochs': 8, 'epochs': 15, 'batch_size': 128, 'lr': 0.001, 'train_limit': 6000,
          'adversarial': {'attack': 'fgsm', 'eps': 0.1, 'steps': 10}, 'bap': {}}
#: Sparsity allocation of every method: 'uniform' (each layer to the target) or 'global' (one NNI global group).
ALLOCATION = 'uniform'

#: Screening: seed 0, AGP, 500 validation images; phase B is chosen from phase A's results (README.md).
SCREEN = {'split': 'validation', 'images': 500, 'seeds': [0], 'sparsities': [0.95, 0.8], 'processes': ['agp@0.667']}
SCREEN_PHASES: Dict[str, List[Dict]] = {
    'A': [{'method': m} for m in ('adversarial-fgsm0.1', 'bap', 'bap-c3.0', 'bap-l2cap', 'bap-linf', 'bap-linfcap',
                                  'bap-margin', 'bap-margin-s1.5', 'bap-margin-n1', 'bap-mix', 'bap-mixmargin')],
    # after A: FGSM-RS's other budgets for calibration, the one-step analogue of bap-linf (margin step cut at the
    # batch mean, rho > 1), both norms by DeepFool, the KL term, and global allocation at 0.95
    'B': [{'method': m} for m in ('adversarial-fgsm0.2', 'adversarial-fgsm0.3', 'bap-margin-cadaptive-s1.5',
                                  'bap-margin-cadaptive-s2', 'bap-both', 'bap-margin-kl1')]
         + [{'method': m, 'allocation': 'global', 'sparsities': [0.95]} for m in ('adversarial-fgsm0.1', 'bap-linf')],
}
#: The BAP variants carried forward into the formal selection (set from the screening, before selection).
SELECTION_VARIANTS: List[str] = []


def stage_data(split: str, images: int, mnist: Optional[Path] = None) -> DataSplit:
    """Training images 0-5999 and the evaluation images of ``split`` from ``mnist`` (default :data:`MNIST`);
    nothing past the last index needed is kept, and a non-test stage asserts it holds no test image."""
    root = Path(mnist or MNIST)
    train, ev = p.split_indices('train'), p.split_indices(split, images)
    stop = max(train[1], ev[1])
    xi = read_idx(root / 't10k-images-idx3-ubyte.gz')[:stop]
    yi = read_idx(root / 't10k-labels-idx1-ubyte.gz')[:stop]
    x = torch.tensor(xi, dtype=torch.float32).div_(255.0).unsqueeze(1)
    y = torch.tensor(yi, dtype=torch.long)
    meta = {'source': str(root), 'normalisation': 'pixel / 255', 'indices': {'train': train, split: ev}}
    data = DataSplit('mnist', x[slice(*train)], y[slice(*train)], x[slice(*ev)], y[slice(*ev)], 10, meta).validate()
    if split != 'test':
        p.assert_no_test_images(data.meta)
    return data


def base_config(allocation: str = ALLOCATION) -> RunConfig:
    """The validated base configuration of every run (the stage's data are passed explicitly)."""
    cfg = {**CONFIG, 'eval': p.eval_spec()}
    if allocation == 'global':
        cfg['config_list'] = [{**CONFIG['config_list'][0], 'global_group_id': 0}]
    return RunConfig.from_dict(cfg)


def jobs(grid: Dict, entries: List[Dict]) -> List[Dict]:
    """Every run of ``grid`` x ``entries``, cell by cell (seed, sparsity, process), so finished cells are whole;
    entries marked ``last`` (PGD-10 in the selection: information, no choice) after all the others."""
    first, last = [e for e in entries if not e.get('last')], [e for e in entries if e.get('last')]
    if last:
        return jobs(grid, first) + jobs(grid, [{k: v for k, v in e.items() if k != 'last'} for e in last])
    out = []
    for seed in grid['seeds']:
        for sp in grid['sparsities']:
            for process in grid['processes']:
                for e in entries:
                    if sp not in e.get('sparsities', grid['sparsities']):  # a screening entry may skip a sparsity
                        continue
                    alloc = e.get('allocation', ALLOCATION)
                    tag = '' if alloc == ALLOCATION else f'-{alloc}'
                    out.append({'name': f'{process}-seed{seed}/{e["method"]}{tag}-{sp:g}', 'process': process,
                                'seed': seed, 'method': e['method'], 'sparsity': sp, 'allocation': alloc})
    return out


def run_job(job: Dict, data: DataSplit, work: Path) -> str:
    """Bring one run folder up to date (prune, evaluate; no ONNX export); returns what was done."""
    cfg = run_config(base_config(job['allocation']), job['process'], job['seed'], job['method'], job['sparsity'])
    init = lambda: dense_model(cfg, data, work.parent / 'cache', progress=False)  # noqa: E731
    return ensure_run(RunFolder(work / job['name']), cfg, data, init, False, False, resume=True)


def rows(work: Path, grid: Dict, entries: List[Dict]) -> List[Dict]:
    """``aer.json``-style rows of every finished, consistent run of the stage (method name + allocation tag)."""
    out = []
    for job in jobs(grid, entries):
        folder = RunFolder(work / job['name'])
        if not (folder.path / 'report.json').is_file() or folder.check_report(
                folder.read_json('report.json').get('spec_hash', ''), onnx=False) is not None:
            continue
        row = aer_row(folder.path, work, process=job['process'])
        tag = '' if job['allocation'] == ALLOCATION else f' ({job["allocation"]})'
        out.append({**row, 'method': job['method'] + tag, 'allocation': job['allocation']})
    return out


def ratios() -> Dict[str, float]:
    """Each method's step cost over an FGSM-RS step, from the committed benchmark (empty before it ran)."""
    return json.loads(BENCH.read_text())['ratios'] if BENCH.is_file() else {}


def selection_entries() -> List[Dict]:
    """The selected variants and the FGSM-RS budgets, then PGD-10 (information only) last."""
    head = [{'method': m} for m in SELECTION_VARIANTS + list(p.BASELINE_FGSM)]
    return head + [{'method': p.BASELINE_PGD, 'last': True}]


def selected(work: Path) -> Dict:
    """The selection made on the finished validation runs (``variant`` None while cells are missing)."""
    return p.select(rows(work / 'select', p.SELECTION, selection_entries()), SELECTION_VARIANTS, ratios())


def confirmation_entries(sel: Dict) -> List[Dict]:
    """The selected variant and FGSM-RS cell by cell (the goal), then PGD-10 (the stretch goal)."""
    return [{'method': sel['variant']}, {'method': sel['fgsm']}, {'method': sel['pgd'], 'last': True}]
