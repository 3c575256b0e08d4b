"""The ``bap`` command line: prune, export, eval, sweep, demo."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional

__all__ = ['main']

_logger = logging.getLogger('nni_bap')

DEMO_CONFIG = {'model': 'digits_cnn', 'dataset': 'digits', 'dense_epochs': 15, 'epochs': 8,
               'adversarial': {'attack': 'fgsm', 'eps': 0.1}}


def _setup_logging(out: Optional[Path], quiet: bool) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING if quiet else logging.INFO)
    console.setFormatter(logging.Formatter('%(levelname)s %(message)s'))
    console.addFilter(lambda r: r.name.startswith('nni_bap') or r.levelno >= logging.WARNING)
    root.addHandler(console)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(out / 'bap.log')
        fh.setFormatter(logging.Formatter('%(asctime)s %(name)s %(levelname)s %(message)s'))
        root.addHandler(fh)
    for noisy in ('nni', 'nni.speedup', 'matplotlib'):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _floats(text: str) -> List[float]:
    try:
        return [float(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected comma-separated numbers, got {text!r}') from None


def _words(text: str) -> List[str]:
    return [v.strip() for v in text.split(',') if v.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='bap', description='Blind adversarial pruning for NNI 3.0.')
    p.add_argument('--quiet', action='store_true', help='no progress bars, warnings only')
    sub = p.add_subparsers(dest='command', required=True)
    pr = sub.add_parser('prune', help='train or load the dense model, prune it, save weights, masks and statistics')
    pr.add_argument('config')
    pr.add_argument('--out', required=True)
    ex = sub.add_parser('export', help='speed up, convert to ONNX and validate a run')
    ex.add_argument('run_dir')
    ev = sub.add_parser('eval', help='robustness report (report.json, report.md, curves.png) of a run')
    ev.add_argument('target', help='run folder, or its model.onnx')
    sw = sub.add_parser('sweep', help='every method x sparsity, then aer.json / aer.csv / aer.png')
    sw.add_argument('config')
    sw.add_argument('--sparsities', type=_floats, default=[0.5, 0.8, 0.9])
    sw.add_argument('--methods', type=_words, default=['natural', 'adversarial', 'bap'])
    sw.add_argument('--seeds', type=lambda t: [int(v) for v in _words(t)], default=[0])
    sw.add_argument('--schedules', type=_words, default=None)
    sw.add_argument('--out', required=True)
    sw.add_argument('--resume', action='store_true', help='reuse finished runs in --out')
    de = sub.add_parser('demo', help='the main job on the embedded digits dataset, end to end')
    de.add_argument('--out', default='runs/demo')
    de.add_argument('--sparsities', type=_floats, default=[0.5, 0.8])
    de.add_argument('--tiny', action='store_true', help='a few seconds-long setting, for smoke tests')
    return p


def _check_sweep(args) -> None:
    from .config import ConfigError
    for s in args.sparsities:
        if not 0 < s < 1:
            raise ConfigError(f'sparsity must be in (0, 1), got {s}')


def _print_rows(out: Path, rows, seconds: float) -> None:
    from .report import aer_table
    dense = json.loads((out / 'dense.json').read_text()) if (out / 'dense.json').exists() else []
    print(aer_table(dense + rows))
    print(f'\nwrote {out / "aer.json"}, {out / "aer.csv"}, {out / "aer.png"} in {seconds:.0f} s')


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    warnings.filterwarnings('ignore', category=FutureWarning)
    warnings.filterwarnings('ignore', message='.*already registered as pytree node.*')
    from .config import ConfigError, load_config, validate_config
    from .data import DataError
    progress = not args.quiet
    start = time.perf_counter()
    try:
        if args.command == 'prune':
            raw = load_config(args.config)
            cfg = validate_config(raw, Path(args.config).resolve().parent)
            out = Path(args.out)
            _setup_logging(out, args.quiet)
            from .runner import run_prune
            info = run_prune(cfg, out, progress=progress, cache=out.parent / 'cache')
            print(json.dumps({k: info[k] for k in ('method', 'sparsity', 'clean_accuracy', 'seconds')}))
        elif args.command == 'export':
            run_dir = Path(args.run_dir)
            _setup_logging(run_dir, args.quiet)
            from .runner import run_export
            res = run_export(run_dir)
            e = res['efficiency']
            print(f'{run_dir / res["onnx"]}: {e["params"]} params ({e["nonzero_params"]} non-zero), {e["flops"]} FLOPs, '
                  f'{e["file_bytes"]} bytes, max |ORT - torch| {res["onnx_max_abs_diff"]:.2e}; {res["note"]}')
        elif args.command == 'eval':
            target = Path(args.target)
            run_dir = target.parent if target.suffix == '.onnx' else target
            _setup_logging(run_dir, args.quiet)
            from .runner import run_eval
            rep = run_eval(run_dir, progress=progress)
            print(f'clean {rep["clean_accuracy"]:.4f}; robust AUC ' +
                  ', '.join(f'{k} {v:.4f}' for k, v in rep['robust_auc'].items()) + f'; wrote {run_dir / "report.md"}')
            for w in rep['warnings']:
                print(f'WARNING: {w}')
        elif args.command == 'sweep':
            raw = load_config(args.config)
            cfg = validate_config(raw, Path(args.config).resolve().parent)
            _check_sweep(args)
            out = Path(args.out)
            _setup_logging(out, args.quiet)
            from .runner import run_sweep
            rows = run_sweep(cfg, args.sparsities, args.methods, out, progress=progress, seeds=args.seeds,
                             schedules=args.schedules, resume=args.resume)
            _print_rows(out, rows, time.perf_counter() - start)
        elif args.command == 'demo':
            cfg = dict(DEMO_CONFIG)
            if args.tiny:
                cfg.update(dense_epochs=2, epochs=1, train_limit=256, test_limit=64, total_times=2,
                           eval={'deepfool': {'budgets': [0.0, 0.1, 0.2], 'steps': 10},
                                 'fgsm': {'budgets': [0.0, 0.1, 0.2]},
                                 'pgd': {'budgets': [0.0, 0.1, 0.2], 'steps': 5}})
            cfg = validate_config(cfg)
            _check_sweep(args)
            out = Path(args.out)
            _setup_logging(out, args.quiet)
            from .runner import run_sweep
            rows = run_sweep(cfg, args.sparsities, ['natural', 'adversarial', 'bap'], out, progress=progress)
            _print_rows(out, rows, time.perf_counter() - start)
    except (ConfigError, DataError, FileNotFoundError) as exc:
        print(f'bap: error: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
