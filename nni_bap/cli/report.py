"""Reports: ``report.json``/``report.md``/``curves.png`` for one run; ``aer.json``/``aer.csv``/``aer.png`` for a sweep."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..utils.atomic import atomic_write, write_json, write_text

__all__ = ['aer_legend', 'aer_table', 'plot_aer', 'plot_curves', 'pyplot', 'save_figure', 'write_aer', 'write_report']
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


def _label(row: Dict) -> str:
    """``method`` alone for the dense reference, else ``method/base pruner`` (``bap/l1``)."""
    return row['method'] if not row.get('base_pruner') else f'{row["method"]}/{row["base_pruner"]}'


def _key_points(rows: List[Dict]) -> List[tuple]:
    return [(k['norm'], k['budget']) for k in rows[0].get('key_points', [])] if rows else []


def _num(value, fmt: str, width: int) -> str:
    return f'{"-":>{width}}' if value is None else f'{value:>{width}{fmt}}'


def aer_table(rows: List[Dict]) -> str:
    """A plain-text table, one line per row: accuracy (A), efficiency (E), robustness (R); :func:`aer_legend` says
    what each column is."""
    norms = list(rows[0]['robust_auc']) if rows else []
    keys = _key_points(rows)
    head = (f'{"method/pruner":<20}{"sparsity":>9}{"clean":>8}{"95% interval":>15}'
            + ''.join(f'{"AUC " + n:>10}' for n in norms) + ''.join(f'{f"{n}@{b:g}":>11}' for n, b in keys)
            + f'{"params":>9}{"nonzero":>9}{"MFLOPs":>8}{"KB":>7}{"ms@64":>7}')
    lines = [head, '-' * len(head)]
    for r in rows:
        kp = {(k['norm'], k['budget']): k['accuracy'] for k in r.get('key_points', [])}
        lo, hi = r.get('clean_interval') or (None, None)
        interval = f'{lo:.3f}-{hi:.3f}' if lo is not None else '-'
        flops, size = r.get('flops'), r.get('file_bytes')
        lines.append(f'{_label(r):<20}{r["sparsity"]:>9.2f}{r["clean_accuracy"]:>8.4f}{interval:>15}'
                     + ''.join(f'{r["robust_auc"][n]:>10.4f}' for n in norms)
                     + ''.join(f'{kp.get(k, float("nan")):>11.4f}' for k in keys)
                     + _num(r.get('params'), 'd', 9) + _num(r.get('nonzero_params'), 'd', 9)
                     + _num(flops / 1e6 if flops is not None else None, '.3f', 8)
                     + _num(size / 1024 if size is not None else None, '.1f', 7)
                     + _num(r.get('latency_ms'), '.3f', 7))
    return '\n'.join(lines)


def aer_legend(rows: List[Dict]) -> str:
    """What :func:`aer_table`'s columns are, with this table's budgets and sample count."""
    n = rows[0].get('samples') if rows else None
    keys = ', '.join(f'{norm}@{b:g}' for norm, b in _key_points(rows))
    return '\n'.join([
        'method/pruner: pruning method (natural AGP, adversarial = FGSM-RS, bap) / base pruner (level: single weights, '
        'shapes kept; l1: whole channels, layers shrunk)',
        f'clean, 95% interval: test accuracy on {n} images with its Wilson interval (differences inside it are noise)',
        'AUC <norm>: area under the worst-case robust accuracy over the budget grid, divided by its range (0-1)',
        f'{keys}: worst-case robust accuracy at that perturbation budget (plain norm over all pixels in [0, 1])',
        'params / nonzero: stored / non-zero parameters of the exported ONNX model; MFLOPs: conv + linear, batch 1; '
        'KB: ONNX file size; ms@64: onnxruntime latency of a batch of 64 on one thread (lowest of 10 medians of 10 runs)'])


def _intervals(rows: List[Dict], key) -> tuple:
    """Mean value and the mean 95% interval of ``rows`` for ``key(row) -> (value, (lo, hi))``."""
    vals = [key(r) for r in rows]
    return (float(np.mean([v for v, _ in vals])), float(np.mean([i[0] for _, i in vals])),
            float(np.mean([i[1] for _, i in vals])))


def _panels(rows: List[Dict]) -> List[tuple]:
    """(title, key) per panel: clean accuracy, then the worst case at every key point; ``key(row) -> (value,
    (lo, hi))``."""
    panels = [('clean accuracy', lambda r: (r['clean_accuracy'], r['clean_interval']))]
    for norm, budget in _key_points(rows):
        def key(r, norm=norm, budget=budget):
            k = next(k for k in r['key_points'] if k['norm'] == norm and k['budget'] == budget)
            return k['accuracy'], k['interval']
        panels.append((f'worst-case accuracy, {_NORM_LABEL.get(norm, norm).split()[0]} {budget:g}', key))
    return panels


def _draw_panel(ax, rows: List[Dict], dense: List[Dict], title: str, key, floor: float) -> None:
    """One accuracy panel: a line per method/pruner with 95% interval bars, the dense reference as a band."""
    labels = list(dict.fromkeys(_label(r) for r in rows))
    methods = list(dict.fromkeys(r['method'] for r in rows))
    colours = {m: f'C{i}' for i, m in enumerate(methods)}
    span = max(r['sparsity'] for r in rows) - min(r['sparsity'] for r in rows) or 0.1
    for i, label in enumerate(labels):
        sel = [r for r in rows if _label(r) == label]
        sps = sorted({r['sparsity'] for r in sel})
        dodge = (i - (len(labels) - 1) / 2) * 0.012 * span  # bars of one sparsity side by side
        stats = [_intervals([r for r in sel if r['sparsity'] == sp], key) for sp in sps]
        mean = np.array([s[0] for s in stats])
        err = np.array([[m - s[1] for m, s in zip(mean, stats)], [s[2] - m for m, s in zip(mean, stats)]])
        structured = sel[0].get('base_pruner') not in (None, 'level')
        ax.errorbar(np.array(sps) + dodge, mean, yerr=np.clip(err, 0, None), marker='s' if structured else 'o', ms=4, capsize=3,
                    ls='--' if structured else '-', color=colours[sel[0]['method']], label=label)
    if dense:
        value, lo, hi = _intervals(dense, key)
        ax.axhline(value, color='k', lw=1, label='dense')
        ax.axhspan(lo, hi, color='k', alpha=0.08, lw=0)
    ax.set_ylim(floor, 1.0)
    ax.set_xlabel('sparsity')
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)


def _floor(rows: List[Dict], key) -> float:
    """Lower y limit: 0 for robustness panels; for clean accuracy 0.5 or less, so a 2-point gap stays small."""
    lowest = min(key(r)[1][0] for r in rows)
    return 0.0 if lowest < 0.5 else 0.5


def _draw_efficiency(ax, rows: List[Dict], dense: List[Dict]) -> None:
    """FLOPs, file size, latency and non-zero parameters of each (base pruner, sparsity) relative to dense."""
    ref = dense[0]
    metrics = [('flops', 'FLOPs'), ('file_bytes', 'file size'), ('latency_ms', 'latency'),
               ('nonzero_params', 'non-zero params')]
    metrics = [(k, name) for k, name in metrics if ref.get(k) and all(r.get(k) is not None for r in rows)]
    pruners = list(dict.fromkeys(r.get('base_pruner') or '-' for r in rows))
    groups = sorted({(r.get('base_pruner') or '-', r['sparsity']) for r in rows}, key=lambda g: (pruners.index(g[0]), g[1]))
    width, top = 0.8 / max(len(metrics), 1), 1.0
    for i, (k, name) in enumerate(metrics):
        ratios = [np.mean([r[k] for r in rows if (r.get('base_pruner') or '-', r['sparsity']) == g]) / ref[k]
                  for g in groups]
        top = max(top, *ratios)
        ax.bar(np.arange(len(groups)) + i * width - 0.4 + width / 2, ratios, width, label=name, color=f'C{i + 4}')
    ax.axhline(1.0, color='k', lw=1)
    ax.set_xticks(np.arange(len(groups)), [f'{bp}\n{sp:g}' for bp, sp in groups], fontsize=8)
    ax.set_ylim(0, top * 1.1 + 0.3)  # room for the legend above the bars
    ax.set_title('efficiency relative to dense (1 = dense)', fontsize=10)
    ax.set_xlabel('base pruner, sparsity (mean over methods)')
    ax.grid(alpha=0.3, axis='y')
    ax.legend(fontsize=7, loc='upper center', ncol=2)


def plot_aer(rows: List[Dict], path: Path, dense: Optional[List[Dict]] = None) -> None:
    """Accuracy, robustness and efficiency against sparsity, one line per method/base pruner (solid: unstructured,
    dashed: channel pruning), bars = 95% Wilson intervals (averaged over processes and seeds), the dense model as
    a black line with its interval as a grey band; clean accuracy on an axis from 0.5 (or 0) to 1 and robust
    accuracy from 0 to 1, so noise is not magnified. With the dense reference and efficiency numbers, a last panel
    shows FLOPs, file size, latency and non-zero parameters relative to dense."""
    plt = pyplot()
    dense = [d for d in (dense or []) if d.get('clean_interval')]
    panels = _panels(rows)
    efficiency = bool(dense) and any(r.get('flops') for r in rows)
    fig, axes = plt.subplots(1, len(panels) + efficiency, figsize=(4.3 * (len(panels) + efficiency), 4.2),
                             squeeze=False)
    for i, (ax, (title, key)) in enumerate(zip(axes[0], panels)):
        _draw_panel(ax, rows, dense, title, key, _floor(rows + dense, key) if i == 0 else 0.0)
    axes[0][0].set_ylabel('accuracy (bars: 95% interval)')
    axes[0][0].legend(fontsize=7, loc='lower left')
    if efficiency:
        _draw_efficiency(axes[0][-1], rows, dense)
    n = rows[0].get('samples')
    fig.suptitle(f'accuracy, robustness and efficiency after pruning ({n} test images)', fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)


def _flat(row: Dict) -> Dict:
    """A row's nested numbers as flat CSV columns: ``auc_<norm>`` and ``acc_<norm>_<budget>`` (+ ``_lo``/``_hi``)."""
    flat = {**row, **{f'auc_{n}': v for n, v in row['robust_auc'].items()}}
    for k in row.get('key_points', []):
        name = f'acc_{k["norm"]}_{k["budget"]:g}'
        flat.update({name: k['accuracy'], f'{name}_lo': k['interval'][0], f'{name}_hi': k['interval'][1]})
    return flat


def write_aer(rows: List[Dict], out: Path, dense: Optional[List[Dict]] = None) -> None:
    """``aer.json`` (one row per run), ``aer.csv`` (flat columns) and ``aer.png`` (``dense``: the reference rows)."""
    out = Path(out)
    write_json(out / 'aer.json', rows)
    flats = [_flat(r) for r in rows]
    numbers = [c for c in (flats[0] if flats else {}) if c.startswith(('auc_', 'acc_'))]
    cols = ['method', 'base_pruner', 'sparsity', 'process', 'schedule', 'seed', 'samples', 'clean_accuracy'] + numbers + \
        ['median_deepfool_l2', 'params', 'nonzero_params', 'flops', 'file_bytes', 'latency_ms', 'bn_drift', 'onnx',
         'onnx_max_abs_diff', 'onnx_clean_accuracy', 'prune_seconds']
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(cols)
    for flat in flats:
        w.writerow([flat.get(c) for c in cols])
    write_text(out / 'aer.csv', text.getvalue())
    if rows:
        plot_aer(rows, out / 'aer.png', dense)
