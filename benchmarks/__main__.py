"""Run every benchmark in one process and write benchmarks/RESULTS.md; ``--only MODULE`` runs one of them
(``python -m benchmarks --only resnet_latency``) and writes benchmarks/RESULTS-MODULE.md instead.

Each comparison is measured side by side (alternating, after warm-up, medians) and printed as
``name: ratio (A ms / B ms) goal G ok|MISS``.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import torch

from . import (
    bap_step,
    deepfool_batched,
    evaluation,
    onnx_latency,
    resnet_latency,
    robustness,
)
from .common import data, trained_lenet


def _cpu() -> str:
    """The CPU's model name and the instruction sets that change int8 kernels and onnxruntime's blocked layouts."""
    from nni_bap.export.cpu import cpu_features
    name = platform.processor() or platform.machine()
    try:
        name = next(ln.split(':', 1)[1].strip() for ln in open('/proc/cpuinfo') if ln.startswith('model name'))
    except (OSError, StopIteration):
        pass
    f = cpu_features()
    sets = [k.upper() for k in ('avx2', 'avx512f', 'avx512vnni') if f.get(k)]
    return f'{name} ({f["machine"]}; {", ".join(sets) or "no AVX2"})'


MODULES = {m.__name__.rsplit('.', 1)[1]: m for m in (bap_step, deepfool_batched, evaluation, onnx_latency,
                                                       resnet_latency, robustness)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--only', choices=sorted(MODULES), help='run this benchmark alone')
    args = ap.parse_args(argv)
    modules = [MODULES[args.only]] if args.only else list(MODULES.values())
    torch.manual_seed(0)
    start = time.perf_counter()
    d = data()
    model = None if args.only == 'resnet_latency' else trained_lenet(d)  # it trains its own ResNet
    print(f'# nni-bap benchmarks on {d.name} with LeNet-5 (torch threads {torch.get_num_threads()})', flush=True)
    results = []
    for module in modules:
        torch.set_num_threads(os.cpu_count() or 1)
        results += module.run(model, d)
    seconds = time.perf_counter() - start
    command = f'python -m benchmarks --only {args.only}' if args.only else '`make bench` (`python -m benchmarks`)'
    path = Path(__file__).with_name(f'RESULTS-{args.only}.md' if args.only else 'RESULTS.md')
    path.write_text(render(results, d.name, command, seconds))
    print(f'wrote {path} in {seconds:.0f} s')
    return 0


def render(results, data_name: str, command: str, seconds: float) -> str:
    """The results file: date, machine (CPU named), versions, command, wall time, goals met, then every line."""
    import onnxruntime
    goals = [r for r in results if r.get('goal', 'info') != 'info' and 'ratio' in r]
    header = [
        '# Benchmark results', '',
        f'- date: {datetime.datetime.now().isoformat(timespec="seconds")}',
        f'- machine: {_cpu()}, {os.cpu_count()} cores, Python {platform.python_version()}',
        f'- torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, data: {data_name}',
        f'- command: {command}, wall time {seconds:.0f} s',
        f'- goals met: {sum(r["ok"] for r in goals)} of {len(goals)}', '', '```']
    return '\n'.join(header + [r['text'] for r in results] + ['```', ''])


if __name__ == '__main__':
    sys.exit(main())
