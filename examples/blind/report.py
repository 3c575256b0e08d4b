"""Results of ``python -m examples.blind``: screening, validation (selection) and confirmation tables, verdicts.

Writes ``README.md`` (criteria first), ``screen.json``, ``selection.json``, ``confirmation.json`` into the output
folder (``examples/results/blind_budgets``) and ``benchmarks/blind_budgets.md`` (step costs and the validation
table of every variant). Reads only finished, consistent run folders.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from nni_bap.utils.atomic import write_json, write_text

from ..reproduce.claims import aer_score, bootstrap_mean
from . import protocol as p
from . import stages as st

__all__ = ['write_report']

_logger = logging.getLogger('examples.blind')


def _f(v, digits: int = 3) -> str:
    return 'n/a' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{v:.{digits}f}'


def _ci(values: Sequence[float]) -> str:
    if not values:
        return 'n/a'
    if len(values) == 1:
        return _f(values[0])
    mean, lo, hi = bootstrap_mean(values)
    return f'{mean:.3f} [{lo:.3f}, {hi:.3f}]'


def _per_sparsity(rows: List[Dict], methods: Sequence[str], ratios: Dict[str, float]) -> List[str]:
    """Markdown tables, one per sparsity: mean (and bootstrap interval over runs when several) per method."""
    out = []
    for sp in sorted({float(r['sparsity']) for r in rows}, reverse=True):
        out += [f'### Sparsity {sp:g}', '',
                '| method | runs | clean | Linf AUC | L2 AUC | A | step / FGSM-RS step | pruning s |',
                '|---|---|---|---|---|---|---|---|']
        for m in methods:
            rs = [r for r in rows if r['method'] == m and float(r['sparsity']) == sp]
            if not rs:
                continue
            col = lambda f: _ci([f(r) for r in rs])
            out.append(f'| {m} | {len(rs)} | {col(lambda r: r["clean_accuracy"])} | '
                       f'{col(lambda r: r["robust_auc"]["linf"])} | {col(lambda r: r["robust_auc"]["l2"])} | '
                       f'{col(aer_score)} | {_f(ratios.get(m.split(" ")[0]), 2)} | '
                       f'{sum(r["prune_seconds"] for r in rs) / len(rs):.0f} |')
        out.append('')
    return out


def _screen(work: Path, ratios: Dict[str, float]) -> Tuple[List[str], List[Dict]]:
    entries = [e for phase in st.SCREEN_PHASES.values() for e in phase]
    rows = st.rows(work / 'screen', st.SCREEN, entries)
    if not rows:
        return [], []
    methods = list(dict.fromkeys(r['method'] for r in rows))
    text = ['## Screening (seed 0, AGP, validation images 6000-6499)', '',
            'One run per cell, so no intervals; a screen to cut the candidates, not a verdict.', '']
    return text + _per_sparsity(rows, methods, ratios), rows


def _validation(work: Path, ratios: Dict[str, float]) -> Tuple[List[str], Dict, List[Dict]]:
    entries = st.selection_entries()
    rows = st.rows(work / 'select', p.SELECTION, entries)
    if not rows or not st.SELECTION_VARIANTS:
        return [], {}, rows
    sel = p.select(rows, st.SELECTION_VARIANTS, ratios)
    text = ['## Validation (selection): seeds 0-2, AGP, sparsities 0.8 and 0.95, validation images 6000-7999', '',
            '| method | cells | mean A | clean | Linf AUC | L2 AUC | step / FGSM-RS step | eligible |',
            '|---|---|---|---|---|---|---|---|']
    for t in sorted(sel['table'], key=lambda t: -t['A'] if not math.isnan(t['A']) else 0):
        elig = 'yes' if t['method'] in sel['eligible'] else ('baseline' if t['method'].startswith('adv') else 'no')
        text.append(f'| {t["method"]} | {t["cells"]} | {_f(t["A"], 4)} | {_f(t["clean"])} | {_f(t["linf_auc"])} | '
                    f'{_f(t["l2_auc"])} | {_f(t["step_ratio"], 2)} | {elig} |')
    verdict = (f'Selected BAP variant: **{sel["variant"]}**; selected FGSM-RS budget: **{sel["fgsm"]}**.'
               if sel['variant'] else f'Selection incomplete: missing {", ".join(sel["missing"])}.')
    text += ['', verdict, ''] + _per_sparsity(rows, [t['method'] for t in sel['table']], ratios)
    return text, sel, rows


def _confirmation(work: Path, sel: Dict, ratios: Dict[str, float]) -> Tuple[List[str], Dict, List[Dict]]:
    if not sel.get('variant'):
        return [], {}, []
    rows = st.rows(work / 'confirm', p.CONFIRMATION, st.confirmation_entries(sel))
    if not rows:
        return ['## Confirmation', '', 'No confirmation run has finished yet.', ''], {}, rows
    res = p.confirm(rows, sel, ratios)
    text = ['## Verdicts (confirmation: test images 8000-9999, seeds 3-7, AGP and linear, sparsities 0.8, 0.95)', '']
    for key in ('goal', 'stretch'):
        r = res[key]
        text += [f'**{key.capitalize()}: {r["verdict"]}** ({r["variant"]} vs {r["baseline"]}, step cost ratio '
                 f'{r["step_ratio"]:.2f}, cost within the bound: {"yes" if r["cost_ok"] else "no"}).', '']
        for s in r['statistics']:
            text.append(f'- {s["name"]} difference: mean {s["mean"]:+.4f}, 95% interval [{s["interval"][0]:+.4f}, '
                        f'{s["interval"][1]:+.4f}], {s["n"]} of {s["expected"]} units: {s["verdict"]}')
        text.append('')
    methods = [sel['variant'], sel['fgsm'], sel['pgd']]
    text += ['## Confirmation table (mean over processes and seeds, bootstrap 95% interval over runs)', '']
    return text + _per_sparsity(rows, methods, ratios), res, rows


def write_report(work: Path, out: Path) -> int:
    """Write the results of the run folders under ``work`` into ``out`` (and ``benchmarks/blind_budgets.md``)."""
    ratios = st.ratios()
    out.mkdir(parents=True, exist_ok=True)
    screen, screen_rows = _screen(work, ratios)
    valid, sel, valid_rows = _validation(work, ratios)
    conf, res, conf_rows = _confirmation(work, sel, ratios)
    head = ['# Blind budgets that win (issue 20): BAP levers vs uniform-budget adversarial pruning', '',
            'Command: `OMP_NUM_THREADS=1 python -m examples.blind --work WORK --stage all` (one or two '
            'workers; resumable), then `python -m examples.blind --work WORK --report`.', '',
            '## Criteria (fixed before any selection run, `examples/blind/protocol.py`)', '',
            f'- Selection: {p.CRITERIA["selection"]}', f'- Goal: {p.CRITERIA["goal"]}',
            f'- Stretch: {p.CRITERIA["stretch"]}', '',
            'Evaluation: the library\'s worst case (FMN-100/APGD-CE-50/APGD-DLR-50 for Linf; DeepFool-50, FMN-50, '
            'APGD-CE-50/DLR-50 for L2) with APGD run at every budget of the grids (Linf 0-0.3 step 0.025, L2 0-3 '
            'step 0.25), not only at the key points; AUC = area under the worst-case accuracy vs budget / range.', '']
    write_text(out / 'README.md', '\n'.join(head + conf + valid + screen) + '\n')
    write_json(out / 'screen.json', screen_rows)
    write_json(out / 'validation.json', valid_rows)
    write_json(out / 'selection.json', {k: v for k, v in sel.items()} if sel else {})
    write_json(out / 'confirmation.json', {'rows': conf_rows, 'verdicts': res})
    bench = ['# Issue 20: step cost of every BAP variant, and the validation table', '',
             'Step cost: `OMP_NUM_THREADS=1 python -m benchmarks.blind_budgets_step` (LeNet-5, batch 128, one thread, '
             'each variant alternating with an FGSM-RS eps 0.1 step, medians).', '', '```']
    if st.BENCH.is_file():
        bench += json.loads(st.BENCH.read_text())['lines']
    write_text(Path(st.ROOT) / 'benchmarks' / 'blind_budgets.md', '\n'.join(bench + ['```', ''] + valid) + '\n')
    _logger.info('wrote %s and benchmarks/blind_budgets.md', out)
    return 0
