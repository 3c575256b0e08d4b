"""Deployment of structured pruning on the small ResNet at 3x32x32: onnxruntime latency against the FLOPs ratio.

The small ResNet is trained briefly on CIFAR-10 when ``$BAP_CIFAR_DIR`` holds it, else on the benchmark data
made CIFAR-shaped (MNIST padded to 32x32, or digits upsampled, repeated over 3 channels). L1NormPruner
removes 50% of every convolution's channels (NNI dependency groups, so residual adds keep matching
channels), the model is fine-tuned with the BatchNorm channels masked (``install_channel_masks``:
``bn_drift`` 0), sped up with ModelSpeedup and exported to ONNX. Goal: latency speedup >= 0.8 x the
FLOPs ratio in onnxruntime with 1 thread, at batch 1 and 64. When the uniform plan misses, the per-stage
kernel profile says where, and other channel plans (blocks 1 and 2; inner convolutions only; channel
counts kept at multiples of 16) are measured. Then int8 (static QDQ, per-channel) against fp32.
"""
from __future__ import annotations

import copy
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from nni.compression.pruning import L1NormPruner
from torch import nn

from nni_bap.data import DataSplit, load_cifar10
from nni_bap.export import OnnxClassifier, QuantizationError, export_onnx, quantize_int8
from nni_bap.models import SmallResNet
from nni_bap.pruning.channel_mask import install_channel_masks
from nni_bap.pruning.compat import finalize
from nni_bap.pruning.dependency import structured_dependency_config
from nni_bap.pruning.training import accuracy, train
from nni_bap.utils.timing import alternating_ms

from .common import info, line, paired_profiles

THREADS = 1
GOAL = 0.8
CIFAR_DIR = os.environ.get('BAP_CIFAR_DIR', '')


def cifar_shaped(d: DataSplit) -> DataSplit:
    """CIFAR-10 from ``$BAP_CIFAR_DIR`` if present, else ``d`` as 3x32x32 images (padded or upsampled)."""
    if CIFAR_DIR and Path(CIFAR_DIR, 'test_batch').exists():
        return load_cifar10(CIFAR_DIR).subset(8000, 2000)

    def shape(x: torch.Tensor) -> torch.Tensor:
        side = x.shape[-1]
        x = F.pad(x, [(32 - side) // 2] * 4) if side * 2 > 32 else F.interpolate(x, scale_factor=32 // side)
        return x.expand(-1, 3, -1, -1).contiguous()
    return DataSplit(f'{d.name} as 3x32x32', shape(d.x_train), d.y_train, shape(d.x_test), d.y_test, d.num_classes)


def _stage(name: str, blocks: int) -> int:
    """0 for the stem, 1-3 for the stage of ``layers.i``, 4 for the head."""
    if name.startswith('layers.'):
        return int(name.split('.')[1]) // blocks + 1
    return 0 if name.startswith('stem') else 4


def plan_config(model: nn.Module, plan: str, blocks: int) -> List[Dict]:
    """NNI config_list of a channel plan (L1 scores, dependency groups added by the caller)."""
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if plan == 'uniform':
        return [{'op_types': ['Conv2d'], 'sparse_ratio': 0.5}]
    pick = {'inner': lambda n: n.endswith('conv1'),
            'aligned16': lambda n: _stage(n, blocks) >= 2,
            'aligned16_inner': lambda n: n.endswith('conv1') and _stage(n, blocks) >= 2}[plan]
    return [{'op_names': [n for n in convs if pick(n)], 'sparse_ratio': 0.5}]


PLANS = {'uniform': 'every conv 50% (16/32/64 -> 8/16/32 channels)',
         'inner': 'conv1 of every block 50%',
         'aligned16': 'stages 2-3 50%, stem and stage 1 kept (every tensor a multiple of 16 channels)',
         'aligned16_inner': 'conv1 of stages 2-3 50% (multiples of 16)'}


def _prune(model: nn.Module, plan: str, blocks: int, finetune: DataSplit = None, epochs: int = 1):
    """L1 channel pruning of a copy; optionally fine-tuned with BatchNorm channels masked. Returns (model, masks)."""
    pruned = copy.deepcopy(model)
    pruner = L1NormPruner(pruned, structured_dependency_config(pruned, plan_config(pruned, plan, blocks)))
    _, masks = pruner.compress()
    if finetune is not None:
        handle = install_channel_masks(pruned)
        train(pruned, finetune.train_set(), epochs=epochs, progress=False)
        handle.remove()
    return finalize(pruner).eval(), masks


def _runner(path: str, x) -> Callable[[], object]:
    clf = OnnxClassifier(path, threads=THREADS)
    feed = {clf.input_name: x}
    return lambda: clf.session.run(None, feed)


def latencies(paths: Dict[str, str], x64, reps64: int = 40, reps1: int = 400) -> Dict[str, Dict[str, float]]:
    """``{'b1': {label: ms}, 'b64': {...}}`` for every model, measured in alternation."""
    return {'b1': alternating_ms({k: _runner(p, x64[:1]) for k, p in paths.items()}, reps1),
            'b64': alternating_ms({k: _runner(p, x64) for k, p in paths.items()}, reps64)}


def train_resnet(d: DataSplit, blocks: int = 1, epochs: int = 1, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return train(SmallResNet(blocks=blocks), d.train_set(), epochs=epochs, seed=seed, progress=False).eval()


def stage_flops(model: nn.Module, blocks: int, x1: torch.Tensor) -> Dict[int, int]:
    """FLOPs (2 x MACs, batch 1) of the conv and linear layers of every stage (:func:`_stage`)."""
    flops: Dict[int, int] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            def hook(mod, inp, out, stage=_stage(name, blocks)):
                flops[stage] = flops.get(stage, 0) + 2 * out[:1].numel() * mod.weight[0].numel()
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model(x1)
    for h in hooks:
        h.remove()
    return flops


def _kernel_stage(row: Dict, blocks: int) -> str:
    if 'Reorder' in row['op']:
        return 'layout reorders'
    found = re.search(r'layers\.(\d+)', row['node'])
    stage = int(found.group(1)) // blocks + 1 if found else (0 if 'stem' in row['node'] else 4)
    return STAGE_NAMES[stage]


STAGE_NAMES = {0: 'stem', 1: 'stage 1', 2: 'stage 2', 3: 'stage 3', 4: 'head'}


def explain(dense, pruned, blocks: int, x64: torch.Tensor) -> List[Dict]:
    """Per-stage kernel times (alternating profiles, b64) against per-stage FLOPs ratios, and the NCHWc count."""
    clfs = {k: OnnxClassifier(r.path, threads=THREADS) for k, r in (('dense', dense), ('pruned', pruned))}
    profiles = paired_profiles(clfs, x64.numpy(), rounds=5, repeats=10)
    flops = {k: stage_flops(r.model, blocks, x64[:1]) for k, r in (('dense', dense), ('pruned', pruned))}
    per = {k: {} for k in profiles}
    for k, rows in profiles.items():
        for r in rows:
            per[k][_kernel_stage(r, blocks)] = per[k].get(_kernel_stage(r, blocks), 0.0) + r['median_us']
    parts = []
    for stage, label in STAGE_NAMES.items():
        a, b = per['dense'].get(label, 0.0), per['pruned'].get(label, 0.0)
        ratio = flops['dense'].get(stage, 0) / max(flops['pruned'].get(stage, 0), 1)
        parts.append(f'{label} {a:.0f} -> {b:.0f} us ({a / max(b, 1e-9):.2f}x, FLOPs ratio {ratio:.2f})')
    parts.append(f'layout reorders {per["dense"].get("layout reorders", 0):.0f} -> '
                 f'{per["pruned"].get("layout reorders", 0):.0f} us')
    reorders = {k: [r for r in rows if 'Reorder' in r['op']] for k, rows in profiles.items()}
    slow = ', '.join(f'{r["op"]} {r["node"]} {r["median_us"]:.0f} us' for r in profiles['pruned'][:5])
    return [info('kernel profile, b64, by stage (dense -> pruned): ' + '; '.join(parts)),
            info(f'layout: ReorderOutput kernels dense {len(reorders["dense"])} '
                 f'({sum(r["median_us"] for r in reorders["dense"]):.0f} us), pruned {len(reorders["pruned"])} '
                 f'({sum(r["median_us"] for r in reorders["pruned"]):.0f} us). onnxruntime runs the convs in its '
                 'blocked NCHWc layout, 16 channels per block on this AVX-512 CPU: a conv with 8 output channels '
                 'fills half a block, its output is reordered back to NCHW and the next conv reads it through the '
                 'NCHW-input path; tensors of 16 or more channels stay blocked'),
            info(f'slowest kernels, pruned b64: {slow}')]


def _export(model: nn.Module, path: Path, x: torch.Tensor, masks=None):
    return export_onnx(model, str(path), x[:8], masks=masks, validation_inputs=x)


def plan_sweep(d: DataSplit, folder: Path, x64: torch.Tensor, trained: nn.Module) -> List[Dict]:
    """Every plan of :data:`PLANS` at blocks 1 (the trained model) and 2 (random init): speedup over FLOPs ratio."""
    out, best = [], None
    for blocks in (1, 2):
        torch.manual_seed(0)
        model = trained if blocks == 1 else SmallResNet(blocks=blocks).eval()
        dense = _export(model, folder / f'plan_dense{blocks}.onnx', x64)
        for plan, text in PLANS.items():
            pruned_model, masks = _prune(model, plan, blocks)
            pruned = _export(pruned_model, folder / f'plan_{plan}{blocks}.onnx', x64, masks)
            ms = latencies({'dense': dense.path, 'pruned': pruned.path}, x64.numpy())
            ratio = dense.efficiency['flops'] / pruned.efficiency['flops']
            over = {b: ms[b]['dense'] / ms[b]['pruned'] / ratio for b in ms}
            out.append(info(f'plan blocks={blocks} {plan} ({text}): FLOPs ratio {ratio:.2f}, params '
                            f'{dense.efficiency["params"]} -> {pruned.efficiency["params"]}, b1 '
                            f'{ms["b1"]["dense"] / ms["b1"]["pruned"]:.2f}x (over the FLOPs ratio {over["b1"]:.2f}), '
                            f'b64 {ms["b64"]["dense"] / ms["b64"]["pruned"]:.2f}x ({over["b64"]:.2f})'))
            score = min(over.values())
            if best is None or score > best[0]:
                best = (score, f'blocks={blocks} {plan}', over, ratio)
    score, name, over, ratio = best
    out.append(info(f'best plan: {name}, over the FLOPs ratio b1 {over["b1"]:.2f}, b64 {over["b64"]:.2f} at a FLOPs '
                    f'ratio of {ratio:.2f} ({"reaches" if score >= GOAL else "misses"} {GOAL} at both batch sizes)'))
    return out


def int8_table(family: str, models: Dict[str, object], d: DataSplit, folder: Path, x64: torch.Tensor) -> List[Dict]:
    """int8 (QDQ, per-channel, 512 calibration images) next to fp32 for each exported model; one table.

    ``models`` maps a label (the first is the reference, e.g. dense) to its :class:`ExportResult`.
    Latency: all fp32 and int8 models in alternating rounds, 1 thread, at batch 1 and 64.
    """
    out, paths, q, refused = [], {}, {}, set()
    for label, res in models.items():
        paths[f'{label} fp32'] = res.path
        args = (res.path, str(folder / f'{family}_{label}.int8.onnx'), d.x_train[:512].numpy(), d.x_test.numpy(),
                d.y_test.numpy())
        try:
            q[label] = quantize_int8(*args, latency_batches=())
        except QuantizationError as exc:
            out.append(info(f'{family} {label}: {exc} (timed below with the gate off, marked REFUSED)'))
            q[label] = quantize_int8(*args, latency_batches=(), min_agreement=0.0, max_accuracy_drop=1.0)
            refused.add(label)
        paths[f'{label} int8'] = q[label].path
    ms = latencies(paths, x64.numpy(), reps64=30, reps1=300)
    ref = next(iter(models))
    out.append(info(f'table {family} | model | params | FLOPs | fp32 b1 / b64 ms | int8 b1 / b64 ms | fp32 speedup '
                    'b1 / b64 over FLOPs ratio | accuracy fp32 / int8 (agreement) | bytes fp32 / int8 |'))
    for label, res in models.items():
        ratio = models[ref].efficiency['flops'] / res.efficiency['flops']
        over = [ms[b][f'{ref} fp32'] / ms[b][f'{label} fp32'] / ratio for b in ('b1', 'b64')]
        i8 = [ms[b][f'{label} int8'] for b in ('b1', 'b64')]
        acc = (f'{q[label].fp32_accuracy:.3f} / {q[label].int8_accuracy:.3f} ({q[label].agreement:.3f}'
               f'{", REFUSED" if label in refused else ""})')
        size = f'{q[label].fp32_bytes} / {q[label].int8_bytes}'
        out.append(info(f'table {family} | {label} | {res.efficiency["params"]} | {res.efficiency["flops"]} | '
                        f'{ms["b1"][f"{label} fp32"]:.3f} / {ms["b64"][f"{label} fp32"]:.2f} | '
                        f'{i8[0]:.3f} / {i8[1]:.2f} | '
                        f'{over[0]:.2f} / {over[1]:.2f} (FLOPs ratio {ratio:.2f}) | {acc} | {size} |'))
    for label in q:
        a, b = ms['b64'][f'{label} fp32'], ms['b64'][f'{label} int8']
        out.append(info(f'ort_{family}_{label}_int8_vs_fp32_b64_speedup: {a / b:.2f} ({a:.2f} ms / {b:.2f} ms) '
                        'goal info'))
        if b > a:
            rows = OnnxClassifier(q[label].path, threads=THREADS).profile(x64.numpy(), repeats=10)
            ops: Dict[str, float] = {}
            for r in rows:
                ops[r['op']] = ops.get(r['op'], 0.0) + r['median_us']
            out.append(info(f'int8 {family} {label} is slower here; its b64 kernel time by op: ' + ', '.join(
                f'{op} {us:.0f} us' for op, us in sorted(ops.items(), key=lambda kv: -kv[1])[:6])))
    return out


def run(model, data) -> List[Dict]:
    """``model`` (LeNet-5) is not used: the small ResNet is trained here on ``data`` made CIFAR-shaped."""
    torch.set_num_threads(THREADS)
    folder = Path(tempfile.mkdtemp(prefix='bap-bench-resnet-'))
    d = cifar_shaped(data)
    x64 = d.x_test[:64]
    start = time.perf_counter()
    net = train_resnet(d)
    pruned_model, masks = _prune(net, 'uniform', 1, finetune=d)
    seconds = time.perf_counter() - start
    dense, pruned = _export(net, folder / 'dense.onnx', x64), _export(pruned_model, folder / 'pruned.onnx', x64, masks)
    ratio = dense.efficiency['flops'] / pruned.efficiency['flops']
    ms = latencies({'dense': dense.path, 'pruned': pruned.path}, x64.numpy(), reps64=60, reps1=600)
    out = []
    for b in ('b1', 'b64'):
        a, p = ms[b]['dense'], ms[b]['pruned']
        out.append(line(f'ort_resnet_pruned50_speedup_over_flops_ratio_{b}', a / p / ratio, a, p, f'>= {GOAL}',
                        a / p / ratio >= GOAL))
    out.append(info(f'small ResNet (blocks=1) on {d.name}, 1 epoch dense + 1 epoch fine-tuning with BatchNorm channels '
                    f'masked ({seconds:.0f} s): accuracy {accuracy(net, d.x_test, d.y_test):.3f} dense, '
                    f'{accuracy(pruned.model, d.x_test, d.y_test):.3f} pruned, bn_drift {pruned.bn_drift:g}; FLOPs '
                    f'{dense.efficiency["flops"]} -> {pruned.efficiency["flops"]} (ratio {ratio:.2f}), params '
                    f'{dense.efficiency["params"]} -> {pruned.efficiency["params"]}, {THREADS} thread'))
    if min(ms[b]['dense'] / ms[b]['pruned'] / ratio for b in ms) < GOAL:
        out += explain(dense, pruned, 1, x64)
        out += plan_sweep(d, folder, x64, net)
    out += int8_table('resnet', {'dense': dense, 'pruned50': pruned}, d, folder, x64)
    return out
