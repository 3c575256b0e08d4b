"""examples/worker.py: jobs shared by pid-file claims."""
import json
import os
import subprocess
import sys

from examples.worker import claim, release, run_jobs


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, '-c', 'pass'])
    p.wait()
    return p.pid


def test_claims_a_live_holder_keeps_a_dead_one_loses(tmp_path):
    assert claim(tmp_path, 'a/b') and claim(tmp_path, 'a/b')  # this process may take its own claim again
    (tmp_path / 'claims' / 'c.pid').write_text(str(os.getppid()))  # a live other process
    assert not claim(tmp_path, 'c')
    (tmp_path / 'claims' / 'd.pid').write_text(str(_dead_pid()))
    assert claim(tmp_path, 'd') and (tmp_path / 'claims' / 'd.pid').read_text() == str(os.getpid())
    release(tmp_path, 'a/b')
    assert not (tmp_path / 'claims' / 'a__b.pid').exists()


def test_run_jobs_skips_held_jobs_releases_and_logs(tmp_path):
    (tmp_path / 'claims').mkdir()
    (tmp_path / 'claims' / 'held.pid').write_text(str(os.getppid()))
    ran = []
    run_jobs(tmp_path, [{'name': 'one'}, {'name': 'held'}, {'name': 'two'}], lambda job: ran.append(job['name']) or 'done')
    assert ran == ['one', 'two']
    log = [json.loads(line) for line in (tmp_path / 'jobs.jsonl').read_text().splitlines()]
    assert [e['job'] for e in log] == ['one', 'two'] and all(e['done'] == 'done' and e['end'] >= e['start'] for e in log)
    assert sorted(p.name for p in (tmp_path / 'claims').iterdir()) == ['held.pid']
