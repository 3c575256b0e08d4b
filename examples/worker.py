"""Workers that share a work folder: each job is claimed by a pid file, run, released and logged, so several
processes (``OMP_NUM_THREADS=1``, one per core) can work through one grid, and a stopped one resumes."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Dict, Iterable

__all__ = ['claim', 'release', 'run_jobs']

_logger = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(work: Path, name: str) -> bool:
    """Take ``name`` for this process unless a live process holds it (a dead holder's claim is taken over)."""
    path = work / 'claims' / (name.replace('/', '__') + '.pid')
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    except FileExistsError:
        pass
    try:
        holder = int(path.read_text() or 0)
    except (OSError, ValueError):
        holder = 0
    if holder and holder != os.getpid() and _alive(holder):
        return False
    tmp = path.with_suffix(f'.{os.getpid()}.tmp')
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, path)
    time.sleep(0.2)
    return path.read_text() == str(os.getpid())


def release(work: Path, name: str) -> None:
    (work / 'claims' / (name.replace('/', '__') + '.pid')).unlink(missing_ok=True)


def run_jobs(work: Path, jobs: Iterable[Dict], run: Callable[[Dict], str]) -> None:
    """Run every job of ``jobs`` no live process holds (``run(job)`` returns what it did); each finished one is
    appended to ``work/jobs.jsonl``."""
    for job in jobs:
        if not claim(work, job['name']):
            continue
        start = time.time()
        try:
            done = run(job)
        finally:
            release(work, job['name'])
        with open(work / 'jobs.jsonl', 'a') as fh:
            fh.write(json.dumps({'job': job['name'], 'pid': os.getpid(), 'start': start, 'end': time.time(),
                                 'done': done}) + '\n')
        _logger.info('%s: %s in %.0f s', job['name'], done, time.time() - start)
