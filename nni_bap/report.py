"""Reports: ``report.json``/``report.md``/``curves.png`` for one run; ``aer.json``/``aer.csv``/``aer.png`` for a sweep."""
from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .atomic import atomic_write, write_json, write_text

__all__ = ['aer_table', 'plot_aer', 'plot_curves', 'save_figure', 'write_aer', 'write_report']
_ATTACK_LABEL = {'deepfool': 'DeepFool-L2, cut (RMS)', 'fgsm': 'FGSM (Linf)', 'pgd': 'PGD-Linf', 'pgd_l2': 'PGD-L2 (RMS)'}


def _plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    atomic_write(Path(path), lambda fh: fig.savefig(fh, format='png', dpi=110))
    _plt().close(fig)


def plot_curves(report: Dict, path: Path) -> None:
    """One panel per attack: accuracy vs budget, torch solid and onnxruntime dashed."""
    plt = _plt()
    curves = report['curves']
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.4), squeeze=False)
    for ax, (name, c) in zip(axes[0], curves.items()):
        for clf, acc in c['accuracy'].items():
            ax.plot(c['budgets'], acc, '-o' if clf == 'torch' else '--x', ms=3,
                    label=f'{clf} (AUC {c["auc"][clf]:.3f})')
        ax.set_title(_ATTACK_LABEL.get(name, name))
        ax.set_xlabel(f'budget ({c["unit"]})')
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel('accuracy')
    fig.suptitle(f'{report.get("method", "")} - {report.get("model", "")} on {report.get("dataset", "")}')
    fig.tight_layout()
    save_figure(fig, path)


def write_report(report: Dict, out: Path) -> None:
    """``report.json``, ``report.md`` and ``curves.png`` in ``out``."""
    out = Path(out)
    write_json(out / 'report.json', report)
    lines = [f'# Robustness report: {report.get("method", "")}', '',
             f'- samples: {report["samples"]}',
             f'- clean accuracy: ' + ', '.join(f'{k} {v:.4f}' for k, v in report['clean_accuracy_by'].items()),
             f'- median DeepFool L2 norm: {report.get("median_deepfool_l2", float("nan")):.4f}', '',
             '| attack | unit | AUC (torch) | AUC (onnx) | accuracy by budget (torch) |', '|---|---|---|---|---|']
    for name, c in report['curves'].items():
        accs = ', '.join(f'{b:g}: {a:.3f}' for b, a in zip(c['budgets'], c['accuracy']['torch']))
        onnx_auc = c['auc'].get('onnx')
        lines.append(f'| {name} | {c["unit"]} | {c["auc"]["torch"]:.4f} | '
                     f'{"-" if onnx_auc is None else f"{onnx_auc:.4f}"} | {accs} |')
    if 'worst_linf' in report:
        lines.append(f'| worst Linf | linf | {report["worst_linf"]["auc"]["torch"]:.4f} | - | |')
    if 'transfer' in report:
        t = report['transfer']
        lines += ['', f'AEs ({t["attack"]}, `{t["npz"]}`): torch accuracy {t["torch_accuracy"]:.4f}, '
                      f'onnxruntime accuracy {t["onnx_accuracy"]:.4f}']
    if 'latency' in report:
        lines += [''] + [f'- onnxruntime latency {k}: median {v["median_ms"]:.3f} ms, p90 {v["p90_ms"]:.3f} ms'
                         for k, v in report['latency'].items()]
    if report.get('kernels_batch_64'):
        lines += ['', '| slowest onnxruntime kernels, batch 64 | op | median us | share |', '|---|---|---|---|']
        lines += [f'| {k["node"]} | {k["op"]} | {k["median_us"]:.0f} | {k["share"]:.0%} |' for k in report['kernels_batch_64']]
    lines += ['', '## Sanity checks', '']
    lines += [f'- WARNING: {w}' for w in report['warnings']] or ['- none flagged']
    lines += ['', '![curves](curves.png)', '']
    write_text(out / 'report.md', '\n'.join(lines))
    plot_curves(report, out / 'curves.png')


def aer_table(rows: List[Dict]) -> str:
    """A plain-text table: method, sparsity, clean accuracy, robust AUCs, FLOPs, ORT difference."""
    attacks = [a for a in ('deepfool', 'fgsm', 'pgd', 'pgd_l2', 'worst_linf') if rows and a in rows[0]['robust_auc']]
    head = f'{"method":<22}{"sparsity":>9}{"clean":>8}' + ''.join(f'{a:>11}' for a in attacks) + \
        f'{"nonzero":>10}{"FLOPs":>10}{"|ORT-pt|":>10}'
    lines = [head, '-' * len(head)]
    for r in rows:
        diff = r.get('onnx_max_abs_diff')
        lines.append(f'{r["method"]:<22}{r["sparsity"]:>9.2f}{r["clean_accuracy"]:>8.4f}'
                     + ''.join(f'{r["robust_auc"][a]:>11.4f}' for a in attacks)
                     + f'{r.get("nonzero_params") or 0:>10}{r.get("flops") or 0:>10}'
                     + (f'{diff:>10.1e}' if diff is not None else f'{"-":>10}'))
    return '\n'.join(lines)


def _mean_by(rows: List[Dict], key) -> Dict:
    groups: Dict = defaultdict(list)
    for r in rows:
        groups[(r['method'], r['sparsity'])].append(key(r))
    return groups


def _default_attack(rows: List[Dict]) -> str:
    """The AUC ``aer.png`` shows: PGD's when the evaluation ran it, else the first one it has."""
    aucs = rows[0]['robust_auc']
    return 'pgd' if 'pgd' in aucs else next(iter(aucs))


def plot_aer(rows: List[Dict], path: Path, attack: Optional[str] = None) -> None:
    """Clean accuracy and robust AUC against sparsity (one line per method, error bars = spread across
    schedules and seeds), and the accuracy-vs-budget curves at the highest sparsity.

    ``attack`` names the robust AUC shown; by default PGD's when evaluated, else the first attack's."""
    plt = _plt()
    attack = attack or _default_attack(rows)
    methods = sorted({r['method'] for r in rows})
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, (title, key) in zip(axes[:2], [('clean accuracy', lambda r: r['clean_accuracy']),
                                            (f'robust AUC ({attack})', lambda r: r['robust_auc'][attack])]):
        groups = _mean_by(rows, key)
        for m in methods:
            sps = sorted(s for (mm, s) in groups if mm == m)
            mean = [np.mean(groups[(m, s)]) for s in sps]
            spread = [np.std(groups[(m, s)]) for s in sps]
            ax.errorbar(sps, mean, yerr=spread, marker='o', ms=4, capsize=3, label=m)
        ax.set_xlabel('sparsity')
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    top = max(r['sparsity'] for r in rows)
    curves = rows[0]['curves']
    curve = 'deepfool' if 'deepfool' in curves else attack if attack in curves else next(iter(curves))
    for m in methods:
        sel = [r for r in rows if r['method'] == m and r['sparsity'] == top]
        if sel:
            b = sel[0]['curves'][curve]['budgets']
            acc = np.mean([r['curves'][curve]['accuracy'] for r in sel], axis=0)
            axes[2].plot(b, acc, marker='.', label=m)
    axes[2].set_title(f'{_ATTACK_LABEL.get(curve, curve)} at sparsity {top:g}')
    axes[2].set_xlabel('budget')
    axes[2].set_ylabel('accuracy')
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def write_aer(rows: List[Dict], out: Path) -> None:
    """``aer.json`` (one row per run), ``aer.csv`` (flat columns) and ``aer.png``."""
    out = Path(out)
    write_json(out / 'aer.json', rows)
    attacks = sorted(rows[0]['robust_auc']) if rows else []
    cols = ['method', 'sparsity', 'process', 'schedule', 'seed', 'clean_accuracy'] + [f'auc_{a}' for a in attacks] + \
        ['median_deepfool_l2', 'params', 'nonzero_params', 'flops', 'onnx', 'onnx_max_abs_diff', 'onnx_clean_accuracy',
         'prune_seconds']
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(cols)
    for r in rows:
        flat = {**r, **{f'auc_{a}': r['robust_auc'][a] for a in attacks}}
        w.writerow([flat.get(c) for c in cols])
    write_text(out / 'aer.csv', text.getvalue())
    if rows:
        plot_aer(rows, out / 'aer.png')
