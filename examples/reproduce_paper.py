"""Reproduce the three findings of the BAP paper on MNIST with LeNet-5, and write examples/results/.

    python examples/reproduce_paper.py                # the full run (about an hour on 2 cores)
    python examples/reproduce_paper.py --quick        # a few minutes, digits, for a smoke test

On 2 cores, two single-threaded processes (one per seed) then a merge use the machine best:

    python examples/reproduce_paper.py --seeds 0 --threads 1 --work runs/reproduce/s0 &
    python examples/reproduce_paper.py --seeds 1 --threads 1 --work runs/reproduce/s1
    python examples/reproduce_paper.py --merge runs/reproduce/s0 runs/reproduce/s1

Pruning processes: AGP over the first 30% and 70% of training, and a linear schedule over 70%;
sparsities 0.5, 0.8, 0.9, 0.95; methods natural, adversarial FGSM eps 0.1/0.2/0.3 (PGD eps 0.1 with --with-pgd),
BAP with adaptive cut and scale 0.9/1.0/1.1; two seeds. Every model is exported to ONNX and
re-classified by onnxruntime. The evaluation is the paper's (DeepFool-100 perturbations cut at
0-0.2 RMS) plus PGD-Linf and FGSM curves.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from nni_bap.config import validate_config
from nni_bap.eval_spec import default_spec
from nni_bap.report import plot_aer
from nni_bap.rows import aer_row
from nni_bap.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'examples' / 'results'
PROCESSES = ['agp@0.3', 'agp@0.7', 'linear@0.7']
SPARSITIES = [0.5, 0.8, 0.9, 0.95]
METHODS = ['natural', 'adversarial-fgsm0.1', 'adversarial-fgsm0.2', 'adversarial-fgsm0.3',
           'bap-s0.9', 'bap-s1.0', 'bap-s1.1']
#: Run order: what the claims need most comes first, so an interrupted run still covers every process.
PRIORITY = ['natural', 'bap-s1.0', 'adversarial-fgsm0.1', 'adversarial-fgsm0.3', 'bap-s0.9', 'bap-s1.1',
            'adversarial-fgsm0.2']
#: PGD-10 adversarial pruning costs 2-3x an FGSM run; add it with --with-pgd when time allows.
PGD_METHOD = 'adversarial-pgd0.1'
SEEDS = [0, 1]
#: The worst-case evaluation (nni_bap.eval_spec): per norm, FMN + APGD-CE/DLR (+ DeepFool for L2).
EVAL = default_spec((1, 28, 28))
CONFIG = {'model': 'lenet5', 'dataset': 'mnist', 'data_dir': str(ROOT.parent / 'shared' / 'data' / 'mnist'),
          'base_pruner': 'level', 'config_list': [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.9}],
          'total_times': 10, 'dense_epochs': 8, 'epochs': 2, 'batch_size': 64, 'lr': 0.001, 'test_limit': 500,
          'eval': EVAL, 'adversarial': {'attack': 'fgsm', 'eps': 0.1, 'steps': 10}, 'bap': {'cutoff': 'adaptive'}}


def family(method: str) -> str:
    return method.split('-')[0]


def stats(values):
    v = np.asarray(values, dtype=float)
    return {'mean': float(v.mean()), 'std': float(v.std()), 'range': float(np.ptp(v)), 'n': int(len(v))}


def summarise(rows):
    """mean / spread of clean accuracy and robust AUCs per (method, sparsity) across processes and seeds."""
    table = {}
    for m in sorted({r['method'] for r in rows}, key=lambda m: METHODS.index(m) if m in METHODS else len(METHODS)):
        for s in sorted({r['sparsity'] for r in rows}):
            sel = [r for r in rows if r['method'] == m and r['sparsity'] == s]
            table[f'{m}@{s:g}'] = {'method': m, 'sparsity': s, 'clean': stats([r['clean_accuracy'] for r in sel]),
                                   **{a: stats([r['robust_auc'][a] for r in sel]) for a in sel[0]['robust_auc']}}
    return table


def _per_process_spread(rows, method, key):
    """For each sparsity, the range across pruning processes of the seed-mean of ``key``."""
    out = {}
    for s in sorted({r['sparsity'] for r in rows}):
        per = {}
        for r in rows:
            if r['method'] == method and r['sparsity'] == s:
                per.setdefault(r['process'], []).append(key(r))
        out[s] = float(np.ptp([np.mean(v) for v in per.values()])) if per else float('nan')
    return out


def _full(rows):
    """Methods that ran at every (process, seed, sparsity)."""
    cells = {(r['process'], r['seed'], r['sparsity']) for r in rows}
    return [m for m in METHODS if {(r['process'], r['seed'], r['sparsity']) for r in rows if r['method'] == m} == cells]


def complete(rows, methods):
    """Rows of the (process, seed) groups in which every one of ``methods`` ran at every sparsity."""
    sps = {r['sparsity'] for r in rows}
    groups = {}
    for r in rows:
        groups.setdefault((r['process'], r['seed']), set()).add((r['method'], r['sparsity']))
    keep = {g for g, have in groups.items() if all((m, s) in have for m in methods for s in sps)}
    return [r for r in rows if (r['process'], r['seed']) in keep and r['method'] in methods]


def claims(rows):
    """The three verdicts, with the numbers they rest on."""
    auc = lambda a: (lambda r: r['robust_auc'][a])
    clean = lambda r: r['clean_accuracy']
    nat = {'clean': _per_process_spread(rows, 'natural', clean), 'linf': _per_process_spread(rows, 'natural', auc('linf')),
           'l2': _per_process_spread(rows, 'natural', auc('l2'))}
    strong = [s for s in nat['clean'] if nat['linf'][s] > 2 * nat['clean'][s] and nat['linf'][s] >= 0.02]
    c1 = {'spread_across_processes_natural': nat, 'sparsities_where_pgd_spread_gt_2x_clean_spread': strong,
          'supported': len(strong) >= len(nat['clean']) / 2}
    fgsm = [m for m in METHODS if m.startswith('adversarial-fgsm')]
    bap = [m for m in METHODS if m.startswith('bap')]

    def across_settings(methods, key):
        sub = complete(rows, methods)
        out = {}
        for s in sorted({r['sparsity'] for r in sub}):
            means = [np.mean([key(r) for r in sub if r['method'] == m and r['sparsity'] == s]) for m in methods]
            out[s] = {'values': [float(v) for v in means], 'range': float(np.ptp(means))}
        return out
    adv_pgd, bap_pgd = across_settings(fgsm, auc('linf')), across_settings(bap, auc('linf'))
    adv_clean, bap_clean = across_settings(fgsm, clean), across_settings(bap, clean)
    mean_range = lambda d: float(np.mean([v['range'] for v in d.values()]))
    c2 = {'adversarial_fgsm_eps_0.1_0.2_0.3': {'pgd_auc': adv_pgd, 'clean': adv_clean},
          'bap_scale_0.9_1.0_1.1': {'pgd_auc': bap_pgd, 'clean': bap_clean},
          'mean_range_pgd_auc': {'adversarial': mean_range(adv_pgd), 'bap': mean_range(bap_pgd)},
          'mean_range_clean': {'adversarial': mean_range(adv_clean), 'bap': mean_range(bap_clean)}}
    c2['supported'] = c2['mean_range_pgd_auc']['adversarial'] > 2 * c2['mean_range_pgd_auc']['bap'] or \
        c2['mean_range_clean']['adversarial'] > 2 * c2['mean_range_clean']['bap']
    n_proc = len({r['process'] for r in rows})
    covered = [m for m in METHODS if len({r['process'] for r in rows if r['method'] == m}) == n_proc]
    spread = {m: float(np.mean(list(_per_process_spread(rows, m, auc('linf')).values()))) for m in covered}
    aer = {}
    for m in METHODS:
        sel = [r for r in rows if r['method'] == m]
        if not sel:
            continue
        aer[m] = float(np.mean([(r['clean_accuracy'] + r['robust_auc']['l2'] + r['robust_auc']['linf']) / 3
                                for r in sel]))
    adv_methods = [m for m in METHODS if family(m) == 'adversarial']
    bap_spread = np.mean([spread[m] for m in bap if m in spread])
    adv_spread = np.mean([spread[m] for m in adv_methods if m in spread])
    bap_aer = np.mean([aer[m] for m in bap if m in aer])
    adv_aer = np.mean([aer[m] for m in adv_methods if m in aer])
    c3 = {'mean_pgd_auc_range_across_processes': spread, 'aer_score': aer,
          'methods_run_in_every_process': covered,
          'bap_mean_spread': float(bap_spread), 'adversarial_mean_spread': float(adv_spread),
          'bap_mean_aer': float(bap_aer), 'adversarial_mean_aer': float(adv_aer),
          'best_adversarial_aer': max(aer[m] for m in adv_methods if m in aer),
          'best_bap_aer': max(aer[m] for m in bap if m in aer),
          'stability_supported': bool(bap_spread < adv_spread), 'aer_supported': bool(bap_aer > adv_aer)}
    c3['supported'] = c3['stability_supported'] and c3['aer_supported']
    return {'claim1': c1, 'claim2': c2, 'claim3': c3}


def _command(args) -> str:
    if args.merge:
        works = ' '.join(Path(w).name for w in args.merge)
        return ('one `python examples/reproduce_paper.py --seeds S --threads 1 --work runs/reproduce/sS` process per '
                f'seed, in parallel, then `python examples/reproduce_paper.py --merge` over {works}')
    return f'`python examples/reproduce_paper.py{" --quick" if args.quick else ""}`'


def write_readme(rows, dense, verdicts, table, seconds, out: Path, args):
    v1, v2, v3 = verdicts['claim1'], verdicts['claim2'], verdicts['claim3']
    yes = lambda b: 'supported' if b else 'not supported'
    done = sorted({r['process'] for r in rows})
    expected = len(PROCESSES) * len(SEEDS) * len(SPARSITIES) * len(METHODS)
    partial = [] if len(rows) >= expected else [
        f'**Partial run: {len(rows)} of {expected} pruned models finished in the time available; '
        f'methods not yet run in every process ({", ".join(done)}) or seed: '
        f'{", ".join(sorted(set(METHODS) - set(_full(rows)))) or "none"}. The verdicts use what finished, as stated '
        'under each claim; `--resume` finishes the grid.**', '']
    lines = ['# Reproducing the BAP paper on MNIST', ''] + partial + [
             f'Command: {_command(args)}; wall time {seconds / 60:.1f} min '
             f'on this machine; {len(rows)} pruned models (+{len(dense)} dense), each exported to ONNX and re-classified '
             'by onnxruntime.', '',
             f'Setting: LeNet-5, MNIST t10k images 0-7999 for training, '
             f'the first {args.test} of images 8000-9999 for evaluation; '
             f'pruning processes {", ".join(PROCESSES)}; seeds {SEEDS}; {CONFIG["epochs"]} epochs of pruning after '
             f'{CONFIG["dense_epochs"]} dense epochs. Robust AUC: area under accuracy vs budget divided by the budget '
             'range (DeepFool-100 cut at 0-0.2 RMS; PGD-Linf-20 and FGSM at 0-0.3).', '',
             'Files: `aer.json` / `aer.csv` (every run), `dense.json`, `summary.json` (means and spreads), '
             '`claims.json` (the numbers below), `aer.png`, `curves_by_sparsity.png`, `auc_spread.png`.', '',
             '| method | sparsity | clean acc (mean +- std) | Linf worst-case AUC | L2 worst-case AUC |', '|---|---|---|---|---|']
    for t in table.values():
        f = lambda k: f'{t[k]["mean"]:.4f} +- {t[k]["std"]:.4f}'
        lines.append(f'| {t["method"]} | {t["sparsity"]:g} | {f("clean")} | {f("linf")} | {f("l2")} |')
    for d in dense:
        lines.append(f'| dense (seed {d["seed"]}) | 0 | {d["clean_accuracy"]:.4f} | {d["robust_auc"]["linf"]:.4f} | '
                     f'{d["robust_auc"]["l2"]:.4f} |')
    n = v1['spread_across_processes_natural']
    lines += ['', '## Claim 1', '',
              '*The robustness of gradually pruned models varies strongly with the pruning process, above all '
              'against strong attacks.*', '',
              f'Verdict: **{yes(v1["supported"])}** by this data. Range across the three processes of the natural '
              'models\' seed-mean clean accuracy vs robust AUCs, per sparsity:', '',
              '| sparsity | clean | Linf worst-case AUC | L2 worst-case AUC |', '|---|---|---|---|']
    lines += [f'| {s:g} | {n["clean"][s]:.4f} | {n["linf"][s]:.4f} | {n["l2"][s]:.4f} |'
              for s in n['clean']]
    lines += ['', f'The PGD spread exceeds twice the clean spread (and 0.02) at sparsities '
              f'{v1["sparsities_where_pgd_spread_gt_2x_clean_spread"] or "none"}.', '',
              '## Claim 2', '', '*Adversarial pruning with a prescribed uniform budget is highly sensitive to that budget.*', '',
              f'Verdict: **{yes(v2["supported"])}**. Mean over sparsities of the range across FGSM eps 0.1/0.2/0.3: '
              f'Linf worst-case AUC {v2["mean_range_pgd_auc"]["adversarial"]:.4f}, clean accuracy {v2["mean_range_clean"]["adversarial"]:.4f}; '
              f'for comparison BAP across scale 0.9/1.0/1.1: Linf worst-case AUC {v2["mean_range_pgd_auc"]["bap"]:.4f}, clean '
              f'{v2["mean_range_clean"]["bap"]:.4f}.', '', '| sparsity | Linf worst-case AUC at eps 0.1 / 0.2 / 0.3 | clean at eps 0.1 / 0.2 / 0.3 |',
              '|---|---|---|']
    a = v2['adversarial_fgsm_eps_0.1_0.2_0.3']
    lines += [f'| {s:g} | {" / ".join(f"{x:.4f}" for x in a["pgd_auc"][s]["values"])} | '
              f'{" / ".join(f"{x:.4f}" for x in a["clean"][s]["values"])} |' for s in a['pgd_auc']]
    lines += ['', '## Claim 3', '', '*BAP\'s robustness is more stable across pruning processes and its overall AER is '
              'better than adversarial pruning\'s.*', '',
              f'Verdict: stability **{yes(v3["stability_supported"])}**, AER **{yes(v3["aer_supported"])}**. '
              f'Mean range across processes of Linf worst-case AUC: BAP {v3["bap_mean_spread"]:.4f} vs adversarial '
              f'{v3["adversarial_mean_spread"]:.4f}. AER score (mean over sparsities, processes and seeds of '
              f'(clean + L2 worst-case AUC + Linf worst-case AUC) / 3, all at equal sparsity): BAP {v3["bap_mean_aer"]:.4f} vs adversarial '
              f'{v3["adversarial_mean_aer"]:.4f} (best single setting: BAP {v3["best_bap_aer"]:.4f}, adversarial '
              f'{v3["best_adversarial_aer"]:.4f}).', '', '| method | Linf worst-case AUC range across processes | AER score |', '|---|---|---|']
    lines += [f'| {m} | {v3["mean_pgd_auc_range_across_processes"].get(m, float("nan")):.4f} | '
              f'{v3["aer_score"].get(m, float("nan")):.4f} |' for m in METHODS if m in v3['aer_score']]
    lines += ['', f'Spreads use the methods that ran in every process: {", ".join(v3["methods_run_in_every_process"])}. '
              'Claim 2 compares budgets within the (process, seed) runs that hold all three of them.']
    lines += ['', '![AER](aer.png)', '', '![curves](curves_by_sparsity.png)', '', '![spread](auc_spread.png)', '']
    (out / 'README.md').write_text('\n'.join(lines))


def figures(rows, out: Path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    plot_aer(rows, out / 'aer.png')
    sps = sorted({r['sparsity'] for r in rows})
    fig, axes = plt.subplots(1, len(sps), figsize=(4 * len(sps), 3.5), squeeze=False)
    for ax, s in zip(axes[0], sps):
        for m in METHODS:
            sel = [r for r in rows if r['method'] == m and r['sparsity'] == s]
            if sel:
                b = sel[0]['curves']['l2']['budgets']
                ax.plot(b, np.mean([r['curves']['l2']['accuracy'] for r in sel], axis=0), label=m,
                        ls='-' if family(m) == 'bap' else ('--' if family(m) == 'adversarial' else ':'))
        ax.set_title(f'sparsity {s:g}: DeepFool cut (RMS)')
        ax.set_xlabel('budget (RMS)')
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel('accuracy')
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / 'curves_by_sparsity.png', dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, m in enumerate(METHODS):
        for s in sps:
            vals = [r['robust_auc']['linf'] for r in rows if r['method'] == m and r['sparsity'] == s]
            if vals:
                ax.errorbar(s + (i - 4) * 0.004, np.mean(vals), yerr=[[np.mean(vals) - min(vals)], [max(vals) - np.mean(vals)]],
                            fmt='o', ms=3, capsize=2, color=f'C{i}', label=m if s == sps[0] else None)
    ax.set_xlabel('sparsity')
    ax.set_ylabel('Linf worst-case AUC (bars: min-max over runs)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / 'auc_spread.png', dpi=100)
    plt.close(fig)


def finished_rows(work: Path):
    """aer.json rows of the run folders of ``work`` that hold a report."""
    rows = []
    for run in sorted(work.glob('*-seed*/*')):
        if (run / 'report.json').exists():
            rows.append(aer_row(run, work, process=run.parent.name.rsplit('-seed', 1)[0]))
    return rows


def analyse(works, out: Path, args) -> None:
    """Merge the runs of one or more work folders and write the committed results."""
    rows, dense, seconds = [], [], 0.0
    for work in works:
        if (work / 'aer.json').exists():
            rows += json.loads((work / 'aer.json').read_text())
            dense += json.loads((work / 'dense.json').read_text())
        else:  # an interrupted run: read back every finished run folder
            rows += finished_rows(work)
            dense += [aer_row(d, work) for d in sorted(work.glob('dense-seed*')) if (d / 'report.json').exists()]
        if (work / 'wall_seconds.txt').exists():
            seconds = max(seconds, float((work / 'wall_seconds.txt').read_text()))
    out.mkdir(parents=True, exist_ok=True)
    (out / 'aer.json').write_text(json.dumps(rows, indent=2))
    (out / 'dense.json').write_text(json.dumps(dense, indent=2))
    from nni_bap.report import write_aer
    write_aer(rows, out)
    table = summarise(rows)
    verdicts = claims(rows)
    (out / 'summary.json').write_text(json.dumps(table, indent=2))
    (out / 'claims.json').write_text(json.dumps(verdicts, indent=2, default=str))
    figures(rows, out)
    write_readme(rows, dense, verdicts, table, seconds, out, args)
    print((out / 'README.md').read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--work', default=str(ROOT / 'runs' / 'reproduce'), help='run folders (models, ONNX files)')
    p.add_argument('--out', default=str(RESULTS), help='where the committed results go')
    p.add_argument('--quick', action='store_true', help='digits, one seed, tiny budgets: a smoke test')
    p.add_argument('--resume', action='store_true', help='reuse finished runs in --work')
    p.add_argument('--test', type=int, default=CONFIG['test_limit'], help='evaluation samples')
    p.add_argument('--seeds', default='0,1', help='comma-separated seeds')
    p.add_argument('--threads', type=int, default=0, help='torch threads (0: default); run seeds in parallel '
                   'processes with --threads 1 on a 2-core machine')
    p.add_argument('--merge', nargs='+', help='only analyse: merge these work folders into --out')
    p.add_argument('--with-pgd', action='store_true', help=f'also run {PGD_METHOD}')
    args = p.parse_args(argv)
    warnings.filterwarnings('ignore')
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
    for name in ('nni', 'matplotlib'):
        logging.getLogger(name).setLevel(logging.WARNING)
    global SEEDS, METHODS
    SEEDS = [int(v) for v in args.seeds.split(',')]
    if args.with_pgd:
        METHODS = METHODS[:4] + [PGD_METHOD] + METHODS[4:]
    if args.merge:
        analyse([Path(w) for w in args.merge], Path(args.out), args)
        return 0
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    cfg = dict(CONFIG, test_limit=args.test)
    sparsities = SPARSITIES
    if args.quick:
        cfg.update(model='digits_cnn', dataset='digits', data_dir=None, dense_epochs=5, epochs=1, total_times=3,
                   eval={'linf': {'budgets': [0.0, 0.1, 0.2], 'key_points': [0.1],
                                  'attacks': {'fmn': {'steps': 20}, 'apgd-ce': {'steps': 10}}},
                         'l2': {'budgets': [0.0, 0.25, 0.5], 'key_points': [0.25],
                                'attacks': {'deepfool': {'steps': 20}, 'fmn': {'steps': 20}, 'apgd-ce': {'steps': 10}}}})
        sparsities = [0.5, 0.9]
    cfg = validate_config(cfg)
    work = Path(args.work)
    start = time.perf_counter()
    order = sorted(METHODS, key=lambda m: PRIORITY.index(m) if m in PRIORITY else len(PRIORITY))
    run_sweep(cfg, sparsities, order, work, progress=False, seeds=SEEDS, processes=PROCESSES, resume=args.resume,
              method_major=True)
    (work / 'wall_seconds.txt').write_text(f'{time.perf_counter() - start:.1f}')
    analyse([work], Path(args.out), args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
