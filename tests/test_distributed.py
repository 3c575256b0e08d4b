"""Data parallel pruning in two gloo processes on the CPU, started by torchrun.

The test runs this file as the torchrun worker (``python -m torch.distributed.run --standalone
--nproc_per_node=2 tests/test_distributed.py OUT``); each process prunes through the CLI (``bap prune``) and
reports what it saw, rank 0 writes the result file, the test checks it.
"""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

CONFIG = {'model': 'digits_cnn', 'dataset': 'digits', 'dense_epochs': 2, 'epochs': 2, 'total_times': 2,
          'train_limit': 512, 'test_limit': 64, 'batch_size': 32, 'method': 'bap', 'device': 'cpu',
          'config_list': [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.6}]}
BATCH = 32  # per process, for the cutoff check
WRITE_EVENTS = ('os.rename', 'os.mkdir', 'os.remove', 'os.rmdir', 'os.truncate', 'tempfile.mkstemp',
                'shutil.rmtree', 'os.symlink', 'os.link', 'os.chmod')


def tensors_hash(tensors) -> str:
    """Hash of named tensors (sorted by name), for comparing models across processes."""
    h = hashlib.sha256()
    for name, t in sorted(tensors.items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _first_step_cutoffs(world: int):
    """(global_mean of this rank's half, single-process mean over the concatenated batch, this half's own mean)
    of the DeepFool norms BAP's adaptive cutoff averages (norms > 0) on the first training batch."""
    from torch.utils.data import DistributedSampler

    from nni_bap.attacks import DeepFool, flat_norm
    from nni_bap.data import load_digits
    from nni_bap.models import build_model
    from nni_bap.utils.distributed import global_mean, train_loader
    ds = load_digits().subset(512, 64).train_set()
    torch.manual_seed(0)
    model = build_model('digits_cnn', 1, 10, 8).eval()
    attack = DeepFool(model, steps=2, overshoot=0.02, candidates=2, check_final=False)

    def moved_norms(x, y):
        n = flat_norm(attack.attack(x, y).eta, 'l2')
        return n[n > 0]

    x, y = next(iter(train_loader(ds, BATCH, seed=0)))
    mine = moved_norms(x, y)
    one = DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=0)
    idx = list(one)[:world * BATCH]
    whole = moved_norms(ds.tensors[0][idx], ds.tensors[1][idx])
    return float(global_mean(mine)), float(whole.mean()), float(mine.mean())


def _record_writes(log: list, recording: list) -> None:
    """Audit every file this process opens for writing, creates, renames or removes while ``recording[0]``."""
    def hook(event, args):
        if not recording[0]:
            return
        if event == 'open' and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = args[1] or '', args[2] or 0
            if any(c in mode for c in 'wax+') or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                log.append(f'open {args[0]}')
        elif event in WRITE_EVENTS:
            log.append(f'{event} {args[0]}')
    sys.addaudithook(hook)


def _worker(out: Path) -> None:
    import torch.distributed as dist

    from nni_bap.cli import jobs
    from nni_bap.cli.main import main
    from nni_bap.utils.distributed import close_distributed, init_distributed
    init_distributed(torch.device('cpu'))
    rank, world = dist.get_rank(), dist.get_world_size()
    cut = _first_step_cutoffs(world)
    captured, writes, recording = [], [], [True]
    prune = jobs.prune  # the prune job's own reference
    jobs.prune = lambda *a, **k: captured.append(prune(*a, **k)) or captured[-1]
    if rank == 1:
        _record_writes(writes, recording)
        Path(os.environ['TMPDIR'], 'probe').write_text('the recorder works')
    code = main(['--quiet', 'prune', str(out / 'cfg.json'), '--out', str(out / 'run')])
    recording[0] = False
    result = captured[0]
    mine = {'rank': rank, 'code': code, 'cutoff': cut, 'writes': writes, 'step1': result.statistics[0]['cutoff'],
            'weights': tensors_hash(result.model.state_dict()),
            'masks': tensors_hash({f'{k}.{t}': m for k, v in result.masks.items() for t, m in v.items()
                                   if m is not None})}
    everyone = [None] * world
    dist.all_gather_object(everyone, mine)
    if rank == 0:
        (out / 'result.json').write_text(json.dumps(everyone))
    close_distributed()


def test_two_processes_agree_and_only_rank0_writes(tmp_path):
    (tmp_path / 'cfg.json').write_text(json.dumps(CONFIG))
    scratch = tmp_path / 'tmp'  # the processes' temporary folder (TMPDIR)
    scratch.mkdir()
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONDONTWRITEBYTECODE': '1', 'TMPDIR': str(scratch),
           'TORCHINDUCTOR_CACHE_DIR': str(scratch / 'inductor')}
    proc = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                           __file__, str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = json.loads((tmp_path / 'result.json').read_text())
    assert [r['code'] for r in ranks] == [0, 0]
    # every rank ends with the same weights and masks, and rank 0 wrote exactly those
    assert ranks[0]['weights'] == ranks[1]['weights'] and ranks[0]['masks'] == ranks[1]['masks']
    saved = torch.load(tmp_path / 'run' / 'model.pt', weights_only=True)
    assert tensors_hash(saved['state_dict']) == ranks[0]['weights']
    run = json.loads((tmp_path / 'run' / 'run.json').read_text())
    assert run['processes'] == 2 and run['measured_sparsity'] == pytest.approx(0.6, abs=0.01)
    assert not (tmp_path / 'run' / 'checkpoint.pt').exists() and (tmp_path / 'run' / 'bap.log').exists()
    # rank 1 wrote no file: no run folder, cache, log or checkpoint. Only torch itself touches the temporary
    # folder (importing torch._dynamo, which DDP's first forward does, probes it and makes its cache folder there)
    assert f'open {scratch / "probe"}' in ranks[1]['writes']
    assert all(w.split(' ', 1)[1].startswith(str(scratch)) for w in ranks[1]['writes']), ranks[1]['writes']
    # the adaptive cutoff over the two halves is the single-process one over the whole batch
    for r in ranks:
        distributed, single, own = r['cutoff']
        assert distributed == pytest.approx(single, abs=1e-5)
    assert any(abs(r['cutoff'][2] - r['cutoff'][1]) > 1e-3 for r in ranks)  # a half alone would not give it
    # and the pruner's own first-step adaptive cutoff is that global one on both ranks
    assert ranks[0]['step1'] == pytest.approx(ranks[1]['step1'], abs=1e-6)


def test_module_entry_point_for_torchrun():
    proc = subprocess.run([sys.executable, '-m', 'nni_bap', 'prune', '--help'], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and '--resume' in proc.stdout and '--device' in proc.stdout


def test_only_prune_runs_under_torchrun(tmp_path, capsys, monkeypatch):
    from nni_bap.cli.main import main
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('RANK', '1')
    assert main(['--quiet', 'eval', str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == ('bap: error (rank 1): `bap eval` runs in one process; only `bap prune` '
                                               'runs under torchrun')


if __name__ == '__main__':
    _worker(Path(sys.argv[1]))
