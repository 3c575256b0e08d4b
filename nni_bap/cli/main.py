"""The ``bap`` command line: prune, export, eval, sweep, demo, plan.

Every user error (a bad setting, a missing or damaged file, a diverging run) ends with one line on
stderr (at most :data:`MAX_ERROR_CHARS` characters) and exit code 2; ``--debug`` shows the traceback instead.
Ctrl-C ends with ``bap: interrupted`` and exit code 130. A command that fails leaves no new ``--out`` folder
holding only its log.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, NoReturn, Optional

from ..attacks import ATTACKS
from ..data import DATASETS
from ..errors import BapError, ConfigError
from ..export.cpu import INT8_TARGETS
from ..models import MODELS
from ..pruning.methods import BASE_PRUNERS, METHODS, SCHEDULES
from ..utils.atomic import open_append
from ..utils.device import resolve_device
from ..utils.distributed import close_distributed, init_distributed, is_main, launched
from .config import RunConfig, load_config
from .jobs import resolve_eval_target, run_eval, run_export, run_prune
from .plan import run_plan
from .report import aer_legend, aer_table
from .run_folder import RunFolder
from .sweep import run_sweep, sweep_plan

__all__ = ['MAX_ERROR_CHARS', 'main']

#: Longest error line printed (values in messages are cut to 200 characters where they are formatted; this bounds
#: what any message, a library's included, can become).
MAX_ERROR_CHARS = 1000

#: ``bap demo``: a BatchNorm CNN trained to its plateau on digits (0.97-0.98); every conv but the first (one input
#: channel, 1% of the FLOPs) pruned by weights (level) and by whole channels (l1), each by natural AGP, FGSM-RS
#: adversarial pruning and BAP; a lighter worst-case evaluation than the default (FMN-40 + APGD-CE-10 for Linf, key
#: point 0.1; FMN-30 + APGD-CE-10 for L2, key point MNIST's 1.5 scaled to 8x8 pixels), so that the 13 models take
#: about 1.5 minutes on 2 cores.
_L2_SCALE = (64 / 784) ** 0.5
DEMO_CONFIG = {'model': 'digits_bn', 'dataset': 'digits', 'dense_epochs': 20, 'epochs': 5,
               'config_list': [{'op_types': ['Conv2d'], 'sparse_ratio': 0.5},
                               {'op_names': ['features.0'], 'exclude': True}],
               'adversarial': {'attack': 'fgsm', 'eps': 0.1},
               'eval': {'linf': {'budgets': [round(0.025 * i, 4) for i in range(13)], 'key_points': [0.1],
                                 'attacks': {'fmn': {'steps': 40}, 'apgd-ce': {'steps': 10}}},
                        'l2': {'budgets': [round(0.25 * i * _L2_SCALE, 4) for i in range(13)],
                               'key_points': [round(1.5 * _L2_SCALE, 4)],
                               'attacks': {'fmn': {'steps': 30}, 'apgd-ce': {'steps': 10}}}}}
DEMO_METHODS, DEMO_BASE_PRUNERS = ('natural', 'adversarial', 'bap'), ('level', 'l1')
TINY = {'dense_epochs': 2, 'epochs': 1, 'train_limit': 256, 'test_limit': 64, 'total_times': 2,
        'eval': {'linf': {'budgets': [0.0, 0.05, 0.1, 0.2], 'key_points': [0.1],
                          'attacks': {'fmn': {'steps': 10}, 'apgd-ce': {'steps': 5}}},
                 'l2': {'budgets': [0.0, 0.25, 0.5], 'key_points': [0.25],
                        'attacks': {'deepfool': {'steps': 10}, 'fmn': {'steps': 10}, 'apgd-ce': {'steps': 5}}}}}


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f'{self.prog}: error: {message} (see {self.prog} --help)\n')


class _LogFile(logging.FileHandler):
    """``bap.log``, appended to without following a symbolic link planted there
    (:func:`~nni_bap.utils.atomic.open_append`)."""

    def _open(self):
        return open_append(Path(self.baseFilename), self.encoding or 'utf-8')


def _setup_logging(out: Optional[Path], quiet: bool) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
        if isinstance(h, _LogFile):
            h.close()
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING if quiet else logging.INFO)
    console.setFormatter(logging.Formatter('%(levelname)s %(message)s'))
    console.addFilter(lambda r: r.name.startswith('nni_bap') or r.levelno >= logging.WARNING)
    root.addHandler(console)
    if out is not None:
        fh = _LogFile(out / 'bap.log')
        fh.setFormatter(logging.Formatter('%(asctime)s %(name)s %(levelname)s %(message)s'))
        root.addHandler(fh)
    for noisy in ('nni', 'nni.speedup', 'matplotlib'):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _floats(text: str) -> List[float]:
    try:
        values = [float(v) for v in text.split(',') if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f'expected comma-separated numbers, got {text!r}')
    return values


def _ints(text: str) -> List[int]:
    try:
        return [int(v) for v in _words(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected comma-separated integers, got {text!r}') from None


def _words(text: str) -> List[str]:
    words = [v.strip() for v in text.split(',') if v.strip()]
    if not words:
        raise argparse.ArgumentTypeError(f'expected comma-separated names, got {text!r}')
    return words


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog='bap', description='Blind adversarial pruning for NNI 3.0.', epilog=_names(),
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quiet', action='store_true', help='no progress bars, warnings only')
    p.add_argument('--debug', action='store_true', help='show the traceback of an error instead of one line')
    sub = p.add_subparsers(dest='command', required=True, parser_class=_Parser)
    pr = sub.add_parser('prune', help='train or load the dense model, prune it, save weights, masks and statistics')
    pr.add_argument('config')
    pr.add_argument('--out', required=True)
    pr.add_argument('--resume', action='store_true', help='reuse a finished run in --out, or continue an interrupted '
                    'one from its checkpoint.pt')
    _device_option(pr)
    ex = sub.add_parser('export', help='speed up, convert to ONNX and validate a run')
    ex.add_argument('run_dir')
    ex.add_argument('--int8', action='store_true', help='also write model.int8.onnx (static QDQ int8, validated '
                    'against fp32, robustness re-checked)')
    ex.add_argument('--force-int8', action='store_true', help='write model.int8.onnx even where it is slower than '
                    'fp32 on this CPU (measured at batch 1 and 64; otherwise skipped with one line)')
    ex.add_argument('--target-cpu', choices=('auto', *INT8_TARGETS), default='auto',
                    help="CPU kind the int8 model is quantised for: 'auto' (this one's), 'vnni' (AVX-512 VNNI, ARM) or "
                    "'no-vnni' (7-bit weights: the same results on every x86 CPU; for a model deployed elsewhere)")
    ev = sub.add_parser('eval', help='robustness report (report.json, report.md, curves.png) of a run')
    ev.add_argument('target', help='run folder, or an ONNX file exported from it')
    _device_option(ev, 'default: the run\'s own setting')
    sw = sub.add_parser('sweep', help='every method x sparsity, then aer.json / aer.csv / aer.png')
    sw.add_argument('config')
    sw.add_argument('--sparsities', type=_floats, default=[0.5, 0.8, 0.9])
    sw.add_argument('--methods', type=_words, default=['natural', 'adversarial', 'bap'],
                    help=f'methods, comma-separated (default natural,adversarial,bap): {", ".join(METHODS.names())}, '
                    'optionally suffixed (adversarial-pgd0.1, bap-s1.1, bap-c0.5)')
    sw.add_argument('--base-pruners', dest='base_pruners', type=_words, default=None,
                    help=f'base pruners, comma-separated ({", ".join(BASE_PRUNERS.names())}; default: the config\'s), '
                    'e.g. level,l1 for unstructured and channel-pruned rows side by side')
    sw.add_argument('--seeds', type=_ints, default=[0])
    sw.add_argument('--processes', '--schedules', dest='processes', type=_words, default=None,
                    help='pruning processes: a schedule and the share of training it spans, e.g. agp@0.3,linear@0.7')
    sw.add_argument('--out', required=True)
    sw.add_argument('--resume', action='store_true', help='reuse finished, consistent runs in --out')
    _device_option(sw)
    _plan_parser(sub)
    de = sub.add_parser('demo', help='the main job on the embedded digits dataset, end to end: natural, adversarial '
                        'and BAP pruning, unstructured (level) and by channels (l1), beside the dense model')
    de.add_argument('--out', default='runs/demo')
    de.add_argument('--sparsities', type=_floats, default=[0.5, 0.75])
    de.add_argument('--tiny', action='store_true', help='a few seconds-long setting, for smoke tests')
    return p


def _align(text: str):
    if text == 'auto':
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer, got {text!r}") from None


def _plan_parser(sub) -> None:
    pl = sub.add_parser('plan', help='per-layer channel widths for a latency speed-up in onnxruntime on this CPU '
                        '(a plain NNI config_list)')
    pl.add_argument('config', help="the run config: its model, data, base_pruner (the importance) and config_list "
                    '(the layers that may be pruned; sparse_ratio values are not used)')
    pl.add_argument('--speedup', type=float, required=True, help='latency factor over the dense model, e.g. 2.0')
    pl.add_argument('--out', required=True, help='plan folder: dense cache, latency table, config_list.yaml, '
                    'plan.yaml, plan.json')
    pl.add_argument('--batch', type=_ints, default=[1, 64], help='batch sizes that must all meet the budget (1,64)')
    pl.add_argument('--threads', type=int, default=1, help='onnxruntime threads the latency is measured with (1)')
    pl.add_argument('--align', type=_align, default=None, help="channel block: 'auto' (this CPU's) or N (default: "
                    "the config's align)")
    pl.add_argument('--importance', default=None, help='channel scores: l1, l2, fpgm, taylor (default: the base '
                    "pruner's own)")
    pl.add_argument('--no-verify', action='store_true', help='skip building and measuring the planned model')
    _device_option(pl)


def _names() -> str:
    """What the registries hold: every name a config or option accepts."""
    tables = (('methods', METHODS), ('base pruners', BASE_PRUNERS), ('schedules', SCHEDULES), ('models', MODELS),
              ('datasets', DATASETS), ('attacks (eval spec)', ATTACKS))
    return 'registered names:\n' + '\n'.join(f'  {kind}: {", ".join(reg.names())}' for kind, reg in tables)


def _device_option(parser: argparse.ArgumentParser, default: str = "default: the config's device, 'auto'") -> None:
    parser.add_argument('--device', default=None, help=f'auto (CUDA when available), cpu, cuda or cuda:N ({default})')


def _config(path: str, device: Optional[str] = None) -> RunConfig:
    """The validated config, ``--device`` overriding its ``device``; CUDA's presence is checked here, before work."""
    raw = load_config(path)
    if device is not None:
        raw['device'] = device
    return RunConfig.from_dict(raw, Path(path).resolve().parent)


def _out(path: str, quiet: bool) -> Path:
    """The output folder, created and logged into by rank 0 only (the other processes log warnings to stderr)."""
    folder = RunFolder(path)
    main_process = is_main()
    if main_process:
        folder.create()
    _setup_logging(folder.path if main_process else None, quiet or not main_process)
    return folder.path


def _print_rows(out: Path, rows, seconds: float) -> None:
    dense = json.loads((out / 'dense.json').read_text()) if (out / 'dense.json').exists() else []
    print(aer_table(dense + rows))
    print('\n' + aer_legend(dense + rows))
    print(f'\nwrote {out / "aer.json"}, {out / "aer.csv"}, {out / "aer.png"} in {seconds:.0f} s')


def _prune(args) -> None:
    cfg = _config(args.config, args.device)
    device = resolve_device(cfg.device)
    args.created_group = init_distributed(device)  # torchrun: join the other processes
    out = _out(args.out, args.quiet)
    info = run_prune(cfg, out, progress=not args.quiet, cache=out / 'cache', resume=args.resume, device=device)
    if is_main():
        print(json.dumps({k: info[k] for k in ('method', 'sparsity', 'measured_sparsity', 'clean_accuracy',
                                                'seconds')}))


def _export(args) -> None:
    folder = RunFolder(args.run_dir).require()
    _setup_logging(folder.path, args.quiet)
    res = run_export(folder.path, int8=args.int8, target_cpu=args.target_cpu, force_int8=args.force_int8)
    e = res['efficiency']
    print(f'{folder / res["onnx"]}: {e["params"]} params ({e["nonzero_params"]} non-zero), {e["flops"]} FLOPs, '
          f'{e["file_bytes"]} bytes, max |ORT - torch| {res["onnx_max_abs_diff"]:.2e}; {res["note"]}')
    if 'int8' in res and not res['int8']['skipped']:  # a skipped one was said in one warning line
        q = res['int8']
        fp32 = f'; {len(q["fp32_layers"])} layers kept in fp32' if q['fp32_layers'] else ''
        print(f'{folder / q["onnx"]}: argmax agreement {q["agreement"]:.4f}, accuracy fp32 {q["fp32_accuracy"]:.4f} '
              f'int8 {q["int8_accuracy"]:.4f} (quantised for {q["settings"]["target_cpu"]} CPUs{fp32}); '
              f'{q["robustness"]["note"]}')


def _eval(args) -> None:
    device = resolve_device(args.device) if args.device is not None else None
    folder, _ = resolve_eval_target(Path(args.target))
    _setup_logging(folder.path, args.quiet)
    rep = run_eval(Path(args.target), progress=not args.quiet, device=device)
    print(f'{rep["onnx"] or "torch only"}: clean {rep["clean_accuracy"]:.4f}; robust AUC ' +
          ', '.join(f'{k} {v:.4f}' for k, v in rep['robust_auc'].items()) + f'; wrote {folder / "report.md"}')
    for w in rep['warnings']:
        print(f'WARNING: {w}')


def _plan(args) -> None:
    cfg = _config(args.config, args.device)
    cfg = cfg.replace(align=args.align) if args.align is not None else cfg
    out = _out(args.out, args.quiet)
    plan = run_plan(cfg, out, args.speedup, args.batch, args.threads, args.importance, not args.no_verify,
                    progress=not args.quiet)
    parts = [f'b{b}: predicted {s:.2f}x' for b, s in plan['predicted_speedup'].items()]
    if plan['measured']:
        measured = plan['measured']['batches'].values()
        parts = [f'{p}, measured {m["measured_speedup"]:.2f}x' for p, m in zip(parts, measured)]
    widths = '; '.join(f'{u} {w}/{plan["channels"][u]}' for u, w in plan['widths'].items())
    print(f'{out / "config_list.yaml"}: {widths}; FLOPs ratio {plan["flops_ratio"]:.2f}; ' + '; '.join(parts)
          + f'; prune with: bap prune {out / "plan.yaml"}')


def _sweep(args, cfg: Optional[RunConfig] = None, methods=None, base_pruners=None) -> None:
    start = time.perf_counter()
    cfg = cfg if cfg is not None else _config(args.config, getattr(args, 'device', None))
    device = resolve_device(cfg.device)
    methods = methods or args.methods
    base_pruners = base_pruners or getattr(args, 'base_pruners', None)
    seeds, processes = getattr(args, 'seeds', [0]), getattr(args, 'processes', None)
    sweep_plan(cfg, args.sparsities, methods, seeds, processes, base_pruners=base_pruners)
    out = _out(args.out, args.quiet)
    rows = run_sweep(cfg, args.sparsities, methods, out, progress=not args.quiet, seeds=seeds, processes=processes,
                     resume=getattr(args, 'resume', False), device=device, base_pruners=base_pruners)
    _print_rows(out, rows, time.perf_counter() - start)


def _demo(args) -> None:
    cfg = RunConfig.from_dict({**DEMO_CONFIG, **(TINY if args.tiny else {})})
    _sweep(args, cfg, list(DEMO_METHODS), list(DEMO_BASE_PRUNERS))


COMMANDS: Dict[str, Callable] = {'prune': _prune, 'export': _export, 'eval': _eval, 'sweep': _sweep, 'demo': _demo,
                                 'plan': _plan}


def _check_launch(command: str) -> None:
    """Only ``bap prune`` runs as several processes (``torchrun``)."""
    if launched() and command != 'prune':
        raise ConfigError(f'`bap {command}` runs in one process; only `bap prune` runs under torchrun')


def _error_line(exc: BaseException) -> str:
    """``bap: error: ...`` in one line; ``(rank N)`` added on the processes other than rank 0."""
    text = ' '.join(str(exc).split()) or type(exc).__name__
    if len(text) > MAX_ERROR_CHARS:
        text = f'{text[:MAX_ERROR_CHARS]}... ({len(text)} characters)'
    rank = int(os.environ.get('RANK', '0')) if launched() else 0
    return f'bap: error{f" (rank {rank})" if rank else ""}: {text}'


def _new_out(args) -> Optional[Path]:
    """The ``--out`` folder of this command when it does not exist yet (rank 0 only)."""
    out = getattr(args, 'out', None)
    return Path(out) if out is not None and is_main() and not os.path.lexists(out) else None


def _remove_if_empty(out: Optional[Path]) -> None:
    """After a failure: remove the new folder ``out`` when it holds nothing but its log (and empty folders)."""
    if out is None or not out.is_dir() or out.is_symlink():
        return
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, _LogFile):
            root.removeHandler(h)
            h.close()
    entries = sorted(out.rglob('*'), key=lambda p: len(p.parts), reverse=True)  # deepest first
    if not all((p.is_dir() and not p.is_symlink()) or p.name == 'bap.log' for p in entries):
        return
    for p in entries:
        if p.is_dir() and not p.is_symlink():
            p.rmdir()
        else:
            p.unlink()
    out.rmdir()


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    warnings.filterwarnings('ignore', category=FutureWarning)
    warnings.filterwarnings('ignore', message='.*already registered as pytree node.*')
    logging.raiseExceptions = False  # a log write that fails (a full disk) must not print a traceback
    new_out = _new_out(args)
    try:
        _check_launch(args.command)
        COMMANDS[args.command](args)
    except BapError as exc:
        _remove_if_empty(new_out)
        if args.debug:
            raise
        print(_error_line(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _remove_if_empty(new_out)
        if args.debug:
            raise
        print('bap: interrupted', file=sys.stderr)
        return 130
    finally:
        if getattr(args, 'created_group', False):
            close_distributed()
    return 0


if __name__ == '__main__':
    sys.exit(main())
