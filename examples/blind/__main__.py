"""Issue 20, *blind budgets that win*: screen BAP's levers, select on validation, confirm on test, report.

The protocol (splits, evaluation, criteria, statistics) is :mod:`examples.blind.protocol`, fixed before any run.
Stages, each a resumable job list that one or two single-threaded workers share (each claims the next free run
with a pid file and brings its run folder up to date stage by stage with ``nni_bap.cli.sweep.ensure_run``):

    OMP_NUM_THREADS=1 python -m examples.blind --work runs/blind --stage screen --phase A
    OMP_NUM_THREADS=1 python -m examples.blind --work runs/blind --stage select
    OMP_NUM_THREADS=1 python -m examples.blind --work runs/blind --stage confirm
    python -m examples.blind --work runs/blind --report

``--stage all`` runs selection then confirmation in one command (what a rerun from scratch needs; finished runs
are reused). ``--report`` writes ``examples/results/blind_budgets/`` from whatever has finished.
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import torch

from nni_bap.cli.run_folder import RunFolder
from nni_bap.cli.sweep import run_config
from nni_bap.utils.atomic import write_json

from ..worker import run_jobs
from . import protocol as p
from . import stages as st
from .report import write_report

_logger = logging.getLogger('examples.blind')


def _check_configs(todo: List[Dict]) -> None:
    """Every job's configuration validated before any work starts (a bad method name fails here)."""
    for job in todo:
        run_config(st.base_config(job['allocation']), job['process'], job['seed'], job['method'], job['sparsity'])


def worker(work: Path, grid: Dict, entries: List[Dict]) -> int:
    """Run every free job of the stage in order; each finished one is logged to ``jobs.jsonl``."""
    data = st.stage_data(grid['split'], grid['images'])
    RunFolder(work).create()
    todo = st.jobs(grid, entries)
    _check_configs(todo)
    write_json(work / 'grid.json', {'grid': grid, 'entries': entries, 'allocation': st.ALLOCATION,
                                    'data': data.meta['indices']})
    run_jobs(work, todo, lambda job: st.run_job(job, data, work))
    return 0


def run_stage(work: Path, stage: str, phase: Optional[str]) -> int:
    """One stage (``screen``, ``select``, ``confirm``) or ``all`` (selection, then confirmation)."""
    if stage == 'screen':
        return worker(work / 'screen', st.SCREEN, st.SCREEN_PHASES[phase or 'A'])
    if stage in ('select', 'all'):
        assert st.SELECTION_VARIANTS, 'set SELECTION_VARIANTS in examples/blind/stages.py from the screening first'
        worker(work / 'select', p.SELECTION, st.selection_entries())
        if stage == 'select':
            return 0
    sel = st.selected(work)
    if sel['variant'] is None:
        print(f'examples.blind: the selection is not complete (missing {sel["missing"]}); run --stage select',
              file=sys.stderr)
        return 2
    return worker(work / 'confirm', p.CONFIRMATION, st.confirmation_entries(sel))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--work', type=Path, default=st.ROOT / 'runs' / 'blind', help='run folders (shared by workers)')
    ap.add_argument('--stage', choices=('screen', 'select', 'confirm', 'all'))
    ap.add_argument('--phase', choices=sorted(st.SCREEN_PHASES), help='screening phase (default A)')
    ap.add_argument('--report', action='store_true', help='write the results of --work (no training)')
    ap.add_argument('--out', type=Path, default=st.RESULTS, help='where --report writes')
    ap.add_argument('--threads', type=int, default=1, help='torch threads per worker (default 1)')
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s %(levelname)s %(message)s')
    warnings.filterwarnings('ignore')
    torch.set_num_threads(args.threads)
    if args.report:
        return write_report(args.work, args.out)
    if not args.stage:
        ap.error('give --stage or --report')
    if not st.MNIST.is_dir():
        print(f'examples.blind: error: MNIST not found at {st.MNIST}', file=sys.stderr)
        return 2
    return run_stage(args.work, args.stage, args.phase)


if __name__ == '__main__':
    sys.exit(main())
