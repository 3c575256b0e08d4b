"""Results of a claims grid (``examples/reproduce_paper.py``): tables, figures, ``claims.json`` and README.

:func:`render_readme` is a pure function of rows and verdicts (tested on hand-made inputs); :func:`write_results`
collects the finished runs of a work folder, checking each is consistent with its config before using it.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from nni_bap.cli.config import RunConfig
from nni_bap.cli.jobs import load_data, run_spec
from nni_bap.cli.report import pyplot, save_figure, write_aer
from nni_bap.cli.rows import aer_row
from nni_bap.cli.run_folder import RunFolder
from nni_bap.cli.sweep import run_config
from nni_bap.utils.atomic import write_json, write_text

from .claims import CRITERIA, MIN_SEEDS, aer_score, bootstrap_mean, evaluate_claims

__all__ = ['collect_rows', 'method_table', 'plot_claims', 'plot_mean_curves', 'plot_methods', 'render_readme',
           'write_results']

_logger = logging.getLogger(__name__)
LABELS = {'natural': 'natural AGP', 'adversarial-fgsm0.1': 'FGSM-RS 0.1', 'adversarial-pgd0.1': 'PGD-10 0.1',
          'bap': 'BAP (adaptive)', 'adversarial-fgsm0.3': 'FGSM-RS 0.3', 'bap-c1.0': 'BAP cutoff 1',
          'bap-c3.0': 'BAP cutoff 3'}
METRICS = (('clean', lambda r: r['clean_accuracy']), ('linf', lambda r: r['robust_auc']['linf']),
           ('l2', lambda r: r['robust_auc']['l2']), ('linf@0.1', lambda r: _key(r, 'linf', 0.1)),
           ('l2@1.5', lambda r: _key(r, 'l2', 1.5)), ('A', aer_score))
#: Shown as a mean only: seconds of pruning (training included) per run, one thread.
SECONDS = ('prune_s', lambda r: r.get('prune_seconds') or float('nan'))


def _key(row: Dict, norm: str, budget: float) -> float:
    hits = [k['accuracy'] for k in row['key_points'] if k['norm'] == norm and abs(k['budget'] - budget) < 1e-9]
    return hits[0] if hits else float('nan')


def _order(methods) -> List[str]:
    known = list(LABELS)
    return sorted(set(methods), key=lambda m: (known.index(m) if m in known else len(known), m))


def method_table(rows: Sequence[Dict]) -> List[Dict]:
    """Per (sparsity, method): n runs and, per metric, the mean with a bootstrap 95% interval over the runs."""
    out = []
    for sp in sorted({r['sparsity'] for r in rows}, reverse=True):
        for m in _order(r['method'] for r in rows if r['sparsity'] == sp):
            sel = [r for r in rows if r['sparsity'] == sp and r['method'] == m]
            entry = {'sparsity': sp, 'method': m, 'n': len(sel)}
            for name, f in METRICS + (SECONDS,):
                mean, low, high = bootstrap_mean([f(r) for r in sel])
                entry[name] = {'mean': mean, 'interval': [low, high] if len(sel) > 1 else None}
            out.append(entry)
    return out


def _cell(v: Dict) -> str:
    if not np.isfinite(v['mean']):
        return 'n/a'
    if v['interval'] is None:  # one run: no interval
        return f'{v["mean"]:.3f}'
    return f'{v["mean"]:.3f} [{v["interval"][0]:.3f}, {v["interval"][1]:.3f}]'


def _table_lines(table: List[Dict]) -> List[str]:
    lines = []
    for sp in sorted({t['sparsity'] for t in table}, reverse=True):
        title = 'Dense reference' if sp == 0 else f'Sparsity {sp:g}'
        lines += ['', f'### {title}', '', '| method | runs | clean | Linf AUC | L2 AUC | Linf 0.1 | L2 1.5 | A | '
                  'pruning s |', '|---|---|---|---|---|---|---|---|---|']
        for t in (t for t in table if t['sparsity'] == sp):
            cells = ' | '.join(_cell(t[k]) for k, _ in METRICS)
            secs = f'{t["prune_s"]["mean"]:.0f}' if np.isfinite(t['prune_s']['mean']) else 'n/a'
            lines.append(f'| {LABELS.get(t["method"], t["method"])} | {t["n"]} | {cells} | {secs} |')
    return lines


def _start(config: Dict) -> str:
    n = config['dense_epochs']
    return f'trained dense for {n} epochs (one model per seed)' if n else 'from scratch'


def _stat_line(s: Dict) -> str:
    if not s['n']:
        return f'- {s["name"]}: no unit finished: **inconclusive**'
    why = f' ({s["reason"]})' if s.get('reason') else ''
    return (f'- {s["name"]}: mean {s["mean"]:+.4f}, 95% interval [{s["interval"][0]:+.4f}, {s["interval"][1]:+.4f}], '
            f'{s["n"]} units over {s["seeds"]} seeds: **{s["verdict"]}**{why}')


def _status_lines(rows, dense, command: str, seconds: Optional[float], missing: Sequence[str]) -> List[str]:
    lines = []
    if missing:
        shown = ', '.join(missing[:8]) + (f' and {len(missing) - 8} more' if len(missing) > 8 else '')
        lines += [f'**Partial: {len(missing)} of the grid\'s runs have not finished ({shown}); every statistic uses '
                  'only the units whose runs all finished, and says how many.**', '']
    wall = f'{seconds / 60:.1f} min wall (first job start to last job end)' if seconds else 'wall time not recorded'
    return lines + [f'Command: `{command}`; {wall}; {len(rows)} pruned models and {len(dense)} dense references, '
                    'each exported to ONNX and evaluated by the worst case over FMN, APGD-CE and APGD-DLR (and '
                    f'DeepFool for L2). {_coverage_line(list(rows) + list(dense))}', '']


def _coverage_line(rows: Sequence[Dict]) -> str:
    """Where APGD ran in these runs' evaluations; a warning when not at every budget of the grid."""
    kinds = sorted({r.get('coverage', 'key points') for r in rows})
    if kinds == ['every budget']:
        return 'APGD ran at every budget of the grid.'
    return (f'**APGD ran at: {", ".join(kinds)}; at the other budgets a curve rests on FMN (and DeepFool) alone, '
            'which can lie above the worst case an independent attacker finds and overstates the AUCs: '
            'rerunning the reproduction on its work folder redoes only the evaluations.**')


def _setting_lines(grid: Dict, config: Dict) -> List[str]:
    names = lambda ms: ', '.join(LABELS.get(m, m) for m in ms)
    return ['## Setting', '',
            f'{config["model"]} on {config["dataset"]}: {_start(config)}, then pruned and trained for '
            f'{config["epochs"]} epochs (batch {config["batch_size"]}, lr {config["lr"]}); the sparsity schedule spans '
            f'the share of those epochs after `@` in the process name ({", ".join(grid["processes"])}) in '
            f'{config["total_times"]} updates, then fine-tuning at the final sparsity. Sparsities '
            f'{", ".join(f"{s:g}" for s in grid["sparsities"])}; seeds {", ".join(map(str, grid["seeds"]))}; methods '
            f'in every cell: {names(grid["core"])}; at {grid["claim2_process"]} and sparsity '
            f'{", ".join(f"{s:g}" for s in grid.get("claim2_sparsities", grid["sparsities"]))} also '
            f'{names(grid["claim2"])}. The '
            f'dense reference trains {config["dense_epochs"] + config["epochs"]} epochs, as many as a pruned model. '
            f'Evaluation on {config.get("test_limit") or "all"} test images; AUC = area under worst-case accuracy '
            'vs budget over the budget range (Linf 0-0.3, L2 0-3).', '']


def _criteria_lines() -> List[str]:
    return ['## Criteria (fixed before the runs)', '',
            f'Verdicts need {MIN_SEEDS} seeds. R = (Linf AUC + L2 AUC) / 2, A = (clean + Linf AUC + L2 AUC) / 3; '
            'intervals are percentile bootstraps (10,000 resamples) over the units of each statistic.', ''] + \
        [f'{i}. {CRITERIA[c]}' for i, c in enumerate(('claim1', 'claim2', 'claim3'), 1)] + ['']


def _verdict_lines(verdicts: Dict) -> List[str]:
    lines = ['## Verdicts', '']
    for i, c in enumerate(('claim1', 'claim2', 'claim3'), 1):
        lines += [f'**Claim {i}: {verdicts[c]["verdict"]}.**', ''] + [_stat_line(s) for s in verdicts[c]['statistics']]
        lines.append('')
    return lines


def _regime_lines(rows: Sequence[Dict], dense: Sequence[Dict]) -> List[str]:
    """Does natural pruning at the highest sparsity keep its clean accuracy (the regime does not collapse)?"""
    sel = [r for r in rows if r['method'] == 'natural']
    if not sel:
        return []
    top = max(r['sparsity'] for r in sel)
    acc = [r['clean_accuracy'] for r in sel if r['sparsity'] == top]
    lines = ['## Regime check', '', f'Natural pruning at sparsity {top:g}: clean accuracy {min(acc):.4f} to '
             f'{max(acc):.4f} over {len(acc)} runs (mean {np.mean(acc):.4f}); '
             f'{sum(a >= 0.95 for a in acc)} of {len(acc)} at or above 0.95.']
    if dense:
        d = [r['clean_accuracy'] for r in dense]
        lines[-1] += f' Dense reference: {min(d):.4f} to {max(d):.4f} over {len(d)} seeds.'
    return lines + ['']


def render_readme(rows: Sequence[Dict], dense: Sequence[Dict], verdicts: Dict, grid: Dict, config: Dict,
                  command: str, seconds: Optional[float], missing: Sequence[str], notes: Sequence[str] = ()) -> str:
    """The results README: status, setting, the criteria (before any number), verdicts, tables, caveats."""
    lines = ['# The BAP paper\'s claims on MNIST / LeNet-5, measured', '']
    lines += _status_lines(rows, dense, command, seconds, missing) + _setting_lines(grid, config)
    lines += _criteria_lines() + _verdict_lines(verdicts) + _regime_lines(rows, dense)
    lines += ['## Clean accuracy and worst-case robustness', '',
              'Mean over the runs (processes x seeds) with a bootstrap 95% interval; Linf 0.1 and L2 1.5 are '
              'worst-case robust accuracies at those budgets; pruning s: mean seconds of pruning and training per '
              'run (one thread, two workers sharing 2 cores; the dense reference is not timed).']
    lines += _table_lines(method_table(list(rows) + list(dense)))
    if notes:
        lines += ['', '## Caveats', ''] + [f'- {n}' for n in notes]
    lines += ['', '## Files', '', '`aer.json` / `aer.csv` (every run), `dense.json`, `claims.json` (the statistics '
              'above), `summary.json` (the tables), `claims.png` (each statistic with its interval), `methods.png` '
              '(clean and worst-case AUCs per method and sparsity), `curves.png` (worst-case accuracy vs budget).']
    return '\n'.join(lines) + '\n'


def _finished(folder: RunFolder, cfg: RunConfig, input_shape: Tuple[int, ...]) -> bool:
    """The run folder holds a pruned/trained model, export and report all consistent with ``cfg``."""
    if not (folder.path / 'report.json').is_file():
        return False
    spec = run_spec(cfg, input_shape).hash
    return not (folder.check_prune(cfg.config_hash()) or folder.check_export() or folder.check_report(spec, onnx=True))


def collect_rows(work: Path, grid: Dict, config: Dict) -> Tuple[List[Dict], List[Dict], List[str]]:
    """(pruned rows, dense rows, names of the grid's runs not finished) of a work folder."""
    base = RunConfig.from_dict(config)
    shape = tuple(load_data(base).input_shape)
    rows, dense, missing = [], [], []
    for seed in grid['seeds']:
        folder = RunFolder(work / f'dense-seed{seed}')
        cfg = base.replace(seed=seed, dense_epochs=base.dense_epochs + base.epochs, method='natural')
        (dense.append(aer_row(folder.path, work)) if _finished(folder, cfg, shape)
         else missing.append(folder.path.name))
    for process in grid['processes']:
        for seed in grid['seeds']:
            for m in grid['core'] + (grid['claim2'] if process == grid['claim2_process'] else []):
                for sp in (grid.get('claim2_sparsities', grid['sparsities']) if m in grid['claim2'] and
                           m not in grid['core'] else grid['sparsities']):
                    name = f'{process}-seed{seed}/{m}-{sp:g}'
                    folder, cfg = RunFolder(work / name), run_config(base, process, seed, m, sp)
                    (rows.append(aer_row(folder.path, work, process=process)) if _finished(folder, cfg, shape)
                     else missing.append(name))
    return rows, dense, missing


def _readable(name: str) -> str:
    for m in sorted(LABELS, key=len, reverse=True):
        name = name.replace(m, LABELS[m])
    return name


def plot_claims(verdicts: Dict, path: Path) -> None:
    """Each statistic as a point with its 95% interval; green above 0 (supported), red below, grey otherwise."""
    plt = pyplot()
    stats = [(c, s) for c in ('claim1', 'claim2', 'claim3') for s in verdicts[c]['statistics'] if s['n']]
    fig, ax = plt.subplots(figsize=(12, 0.45 * max(len(stats), 1) + 1.2))
    colour = {'supported': 'tab:green', 'contradicted': 'tab:red', 'inconclusive': 'tab:grey'}
    for i, (c, s) in enumerate(stats):
        ax.errorbar(s['mean'], i, xerr=[[s['mean'] - s['interval'][0]], [s['interval'][1] - s['mean']]], fmt='o',
                    color=colour[s['verdict']], capsize=3)
    ax.axvline(0, color='black', lw=0.8)
    ax.set_yticks(range(len(stats)), [f'claim {c[-1]}: {_readable(s["name"])}' for c, s in stats], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel('mean paired difference, > 0 favours the claim', fontsize=8)
    ax.set_title('95% bootstrap intervals: green supported, red contradicted, grey inconclusive', fontsize=9)
    fig.subplots_adjust(left=0.34, right=0.97, top=1 - 0.5 / (0.45 * max(len(stats), 1) + 1.2),
                        bottom=0.7 / (0.45 * max(len(stats), 1) + 1.2))
    save_figure(fig, path)


def plot_methods(table: List[Dict], path: Path) -> None:
    """Clean accuracy and worst-case AUCs per method, one panel per sparsity, with intervals."""
    plt = pyplot()
    sps = sorted({t['sparsity'] for t in table if t['sparsity'] > 0}, reverse=True)
    fig, axes = plt.subplots(1, max(len(sps), 1), figsize=(5 * max(len(sps), 1), 3.8), squeeze=False)
    for ax, sp in zip(axes[0], sps):
        sel = [t for t in table if t['sparsity'] == sp]
        for j, (metric, shift) in enumerate((('clean', -0.2), ('linf', 0.0), ('l2', 0.2))):
            for i, t in enumerate(sel):
                v = t[metric]
                err = [[v['mean'] - v['interval'][0]], [v['interval'][1] - v['mean']]] if v['interval'] else None
                ax.errorbar(i + shift, v['mean'], yerr=err,
                            fmt='os^'[j], color=f'C{j}', capsize=2, label=metric if i == 0 else None)
        ax.set_xticks(range(len(sel)), [LABELS.get(t['method'], t['method']) for t in sel], rotation=30, fontsize=7,
                      ha='right')
        ax.set_title(f'sparsity {sp:g}')
        ax.set_ylim(0, 1)
    axes[0][0].legend(fontsize=7, title='clean / worst-case AUC', title_fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def plot_mean_curves(rows: Sequence[Dict], path: Path) -> None:
    """Worst-case accuracy vs budget, mean over runs, per method; rows of panels per sparsity, columns per norm."""
    plt = pyplot()
    sps = sorted({r['sparsity'] for r in rows}, reverse=True)
    fig, axes = plt.subplots(max(len(sps), 1), 2, figsize=(10, 3.2 * max(len(sps), 1)), squeeze=False)
    for ax_row, sp in zip(axes, sps):
        for ax, norm in zip(ax_row, ('linf', 'l2')):
            for m in _order(r['method'] for r in rows if r['sparsity'] == sp):
                sel = [r for r in rows if r['sparsity'] == sp and r['method'] == m]
                ax.plot(sel[0]['curves'][norm]['budgets'], np.mean([r['curves'][norm]['accuracy'] for r in sel], 0),
                        label=LABELS.get(m, m))
            ax.set_title(f'sparsity {sp:g}, {norm}', fontsize=9)
            ax.set_xlabel(f'{norm} budget')
            ax.set_ylabel('worst-case accuracy')
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def _wall(work: Path) -> Optional[float]:
    path = work / 'jobs.jsonl'
    if not path.is_file():
        return None
    done = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    done = [d for d in done if d['done'] != 'reused']
    return max(d['end'] for d in done) - min(d['start'] for d in done) if done else None


def write_results(work: Path, out: Path, grid: Dict, config: Dict, command: str, notes: Sequence[str] = ()) -> Dict:
    """Collect the finished runs of ``work`` and write the results folder ``out``; returns the verdicts."""
    config = RunConfig.from_dict(config).to_dict()
    rows, dense, missing = collect_rows(Path(work), grid, config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    verdicts = evaluate_claims(rows, grid)
    table = method_table(list(rows) + list(dense))
    write_aer(rows, out)
    write_json(out / 'dense.json', dense)
    write_json(out / 'claims.json', verdicts)
    write_json(out / 'summary.json', {'table': table, 'missing': missing, 'wall_seconds': _wall(Path(work))})
    if rows:
        plot_claims(verdicts, out / 'claims.png')
        plot_methods(table, out / 'methods.png')
        plot_mean_curves(rows, out / 'curves.png')
    write_text(out / 'README.md', render_readme(rows, dense, verdicts, grid, config, command, _wall(Path(work)),
                                                missing, notes))
    _logger.info('results in %s: %s', out, {c: v['verdict'] for c, v in verdicts.items()})
    return verdicts
