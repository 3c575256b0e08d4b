"""Reports: ``report.json``/``report.md``/``curves.png`` for one run; ``aer.json``/``aer.csv``/``aer.png`` for a sweep."""
from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import numpy as np

from ..utils.atomic import atomic_write, write_json, write_text

__all__ = ['aer_table', 'plot_aer', 'plot_curves', 'pyplot', 'save_figure', 'write_aer', 'write_report']
_NORM_LABEL = {'linf': 'Linf worst case', 'l2': 'L2 worst case'}


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib  # matplotlib takes about a second to import: only when a figure is drawn
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    atomic_write(Path(path), lambda fh: fig.savefig(fh, format='png', dpi=110))
    pyplot().close(fig)


def plot_curves(report: Dict, path: Path) -> None:
    """One panel per norm: the worst case (torch solid, onnxruntime dashed) and each attack's own curve (thin)."""
    plt = pyplot()
    curves = report['curves']
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.8), squeeze=False)
    for ax, (norm, c) in zip(axes[0], curves.items()):
        for clf, acc in c['accuracy'].items():
            ax.plot(c['budgets'], acc, '-o' if clf == 'torch' else '--x', ms=3, lw=2,
                    label=f'worst case, {clf} (AUC {c["auc"][clf]:.3f})')
        for key, acc in report.get('curves_by_attack', {}).items():
            if key.startswith(f'{norm}/'):
                ax.plot(c['budgets'], acc, lw=0.8, alpha=0.8, label=f'{key.split("/")[1]} alone')
        for kp in report.get('key_points', []):
            if kp['norm'] == norm:
                ax.errorbar([kp['budget']], [kp['accuracy']], yerr=[[kp['accuracy'] - kp['interval'][0]],
                            [kp['interval'][1] - kp['accuracy']]], fmt='none', ecolor='k', capsize=3)
        partial = report.get('coverage', 'every budget') != 'every budget'
        ax.set_title(f'{_NORM_LABEL.get(norm, norm)} (bars: 95% interval, n={report["samples"]})'
                     + (f'\nAPGD at {report["coverage"]} only: other points from minimum-norm attacks' if partial
                        else ''), fontsize=9)
        ax.set_xlabel(f'budget ({norm} norm)')
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel('robust accuracy')
    fig.suptitle(f'{report.get("method", "")} - {report.get("model", "")} on {report.get("dataset", "")}')
    fig.tight_layout()
    save_figure(fig, path)


def _fmt(v) -> str:
    return '-' if v is None else f'{v:.4f}'


def _cascade_row(norm: str, step: Dict) -> str:
    if step['budget'] is None:
        return f'| {norm} {step["attack"]} (minimum norm) | - | {step["ran_on"]} | found {step["found"]:.3f} |'
    return (f'| {norm} {step["attack"]} | {step["budget"]:g} | {step["ran_on"]} | '
            f'accuracy after {step["accuracy_after"]:.4f} |')


def _report_lines(report: Dict) -> List[str]:
    lo, hi = report.get('clean_interval', [None, None])
    lines = [f'# Robustness report: {report.get("method", "")}', '', f'- samples: {report["samples"]}',
             '- clean accuracy: ' + ', '.join(f'{k} {v:.4f}' for k, v in report['clean_accuracy_by'].items())
             + (f' (95% interval {lo:.4f}-{hi:.4f})' if lo is not None else ''),
             f'- median DeepFool L2 norm: {_fmt(report.get("median_deepfool_l2"))}',
             f'- fixed-budget attacks (APGD) ran at: {report.get("coverage", "every budget")}'
             + ('' if report.get('coverage', 'every budget') == 'every budget' else
                ' only: the other points of the curves rest on the minimum-norm attacks alone (less strict)'), '',
             '| norm | worst-case AUC (torch) | (onnx) | accuracy by budget (torch) |', '|---|---|---|---|']
    for norm, c in report['curves'].items():
        accs = ', '.join(f'{b:g}: {a:.3f}' for b, a in zip(c['budgets'], c['accuracy']['torch']))
        lines.append(f'| {norm} | {c["auc"]["torch"]:.4f} | {_fmt(c["auc"].get("onnx"))} | {accs} |')
    lines += ['', '| key point | worst-case accuracy | 95% interval | n |', '|---|---|---|---|']
    lines += [f'| {k["norm"]} {k["budget"]:g} | {k["accuracy"]:.4f} | {k["interval"][0]:.4f}-{k["interval"][1]:.4f} '
              f'| {k["n"]} |' for k in report.get('key_points', [])]
    lines += ['', '| attack alone | AUC |', '|---|---|']
    lines += [f'| {k} | {v:.4f} |' for k, v in report.get('robust_auc_by_attack', {}).items()]
    lines += ['', '| cascade step | budget | samples attacked | result |', '|---|---|---|---|']
    lines += [_cascade_row(norm, step) for norm, log in report.get('cascade', {}).items() for step in log]
    return lines


def write_report(report: Dict, out: Path) -> None:
    """``curves.png``, ``report.md`` and last ``report.json`` (whose presence marks a finished report) in ``out``."""
    out = Path(out)
    plot_curves(report, out / 'curves.png')
    lines = _report_lines(report)
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
    write_json(out / 'report.json', report)


def aer_table(rows: List[Dict]) -> str:
    """A plain-text table: method, sparsity, clean accuracy, worst-case AUCs and key points, FLOPs, ORT difference."""
    norms = list(rows[0]['robust_auc']) if rows else []
    keys = [(k['norm'], k['budget']) for k in rows[0].get('key_points', [])] if rows else []
    head = (f'{"method":<22}{"sparsity":>9}{"clean":>8}' + ''.join(f'{"AUC " + n:>10}' for n in norms)
            + ''.join(f'{f"{n} {b:g}":>11}' for n, b in keys) + f'{"nonzero":>10}{"FLOPs":>10}{"|ORT-pt|":>10}')
    lines = [head, '-' * len(head)]
    for r in rows:
        diff = r.get('onnx_max_abs_diff')
        kp = {(k['norm'], k['budget']): k['accuracy'] for k in r.get('key_points', [])}
        lines.append(f'{r["method"]:<22}{r["sparsity"]:>9.2f}{r["clean_accuracy"]:>8.4f}'
                     + ''.join(f'{r["robust_auc"][n]:>10.4f}' for n in norms)
                     + ''.join(f'{kp.get(k, float("nan")):>11.4f}' for k in keys)
                     + f'{r.get("nonzero_params") or 0:>10}{r.get("flops") or 0:>10}'
                     + (f'{diff:>10.1e}' if diff is not None else f'{"-":>10}'))
    return '\n'.join(lines)


def _mean_by(rows: List[Dict], key) -> Dict:
    groups: Dict = defaultdict(list)
    for r in rows:
        groups[(r['method'], r['sparsity'])].append(key(r))
    return groups


def plot_aer(rows: List[Dict], path: Path) -> None:
    """Clean accuracy and the worst-case AUC of each norm against sparsity (one line per method, error bars =
    spread across processes and seeds), and the L2 worst-case curves at the highest sparsity."""
    plt = pyplot()
    methods = sorted({r['method'] for r in rows})
    norms = list(rows[0]['robust_auc'])
    panels = [('clean accuracy', lambda r: r['clean_accuracy'])] + [
        (f'worst-case AUC ({n})', lambda r, n=n: r['robust_auc'][n]) for n in norms]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4.2 * (len(panels) + 1), 4))
    for ax, (title, key) in zip(axes, panels):
        groups = _mean_by(rows, key)
        for m in methods:
            sps = sorted(s for (mm, s) in groups if mm == m)
            ax.errorbar(sps, [np.mean(groups[(m, s)]) for s in sps], yerr=[np.std(groups[(m, s)]) for s in sps],
                        marker='o', ms=4, capsize=3, label=m)
        ax.set_xlabel('sparsity')
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    _plot_top_curves(axes[-1], rows, methods, 'l2' if 'l2' in norms else norms[0])
    fig.tight_layout()
    save_figure(fig, path)


def _plot_top_curves(ax, rows: List[Dict], methods: List[str], norm: str) -> None:
    top = max(r['sparsity'] for r in rows)
    for m in methods:
        sel = [r for r in rows if r['method'] == m and r['sparsity'] == top]
        if sel:
            ax.plot(sel[0]['curves'][norm]['budgets'], np.mean([r['curves'][norm]['accuracy'] for r in sel], axis=0),
                    marker='.', label=m)
    ax.set_title(f'{_NORM_LABEL.get(norm, norm)} at sparsity {top:g}')
    ax.set_xlabel(f'budget ({norm})')
    ax.set_ylabel('robust accuracy')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _flat(row: Dict) -> Dict:
    """A row's nested numbers as flat CSV columns: ``auc_<norm>`` and ``acc_<norm>_<budget>`` (+ ``_lo``/``_hi``)."""
    flat = {**row, **{f'auc_{n}': v for n, v in row['robust_auc'].items()}}
    for k in row.get('key_points', []):
        name = f'acc_{k["norm"]}_{k["budget"]:g}'
        flat.update({name: k['accuracy'], f'{name}_lo': k['interval'][0], f'{name}_hi': k['interval'][1]})
    return flat


def write_aer(rows: List[Dict], out: Path) -> None:
    """``aer.json`` (one row per run), ``aer.csv`` (flat columns) and ``aer.png``."""
    out = Path(out)
    write_json(out / 'aer.json', rows)
    flats = [_flat(r) for r in rows]
    numbers = [c for c in (flats[0] if flats else {}) if c.startswith(('auc_', 'acc_'))]
    cols = ['method', 'sparsity', 'process', 'schedule', 'seed', 'samples', 'clean_accuracy'] + numbers + \
        ['median_deepfool_l2', 'params', 'nonzero_params', 'flops', 'onnx', 'onnx_max_abs_diff', 'onnx_clean_accuracy',
         'prune_seconds']
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(cols)
    for flat in flats:
        w.writerow([flat.get(c) for c in cols])
    write_text(out / 'aer.csv', text.getvalue())
    if rows:
        plot_aer(rows, out / 'aer.png')
