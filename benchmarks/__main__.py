"""Run every benchmark in one process and write benchmarks/RESULTS.md.

Each comparison is measured side by side (alternating, after warm-up, medians) and printed as
``name: ratio (A ms / B ms) goal G ok|MISS``.
"""
from __future__ import annotations

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


def main() -> int:
    torch.manual_seed(0)
    start = time.perf_counter()
    d = data()
    model = trained_lenet(d)
    print(f'# nni-bap benchmarks on {d.name} with LeNet-5 (torch threads {torch.get_num_threads()})', flush=True)
    results = []
    for module in (bap_step, deepfool_batched, evaluation, onnx_latency, resnet_latency, robustness):
        torch.set_num_threads(os.cpu_count() or 1)
        results += module.run(model, d)
    seconds = time.perf_counter() - start
    import onnxruntime
    goals = [r for r in results if r.get('goal', 'info') != 'info' and 'ratio' in r]
    header = [
        '# Benchmark results', '',
        f'- date: {datetime.datetime.now().isoformat(timespec="seconds")}',
        f'- machine: {_cpu()}, {os.cpu_count()} cores, Python {platform.python_version()}',
        f'- torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, data: {d.name}',
        f'- command: `make bench` (`python -m benchmarks`), wall time {seconds:.0f} s',
        f'- goals met: {sum(r["ok"] for r in goals)} of {len(goals)}', '', '```']
    text = '\n'.join(header + [r['text'] for r in results] + ['```', ''])
    Path(__file__).with_name('RESULTS.md').write_text(text)
    print(f'wrote benchmarks/RESULTS.md in {seconds:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
