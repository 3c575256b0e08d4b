"""Atomic writes, sorted contents, stale temporary files, and writes that never follow a link (issue 22)."""
import collections
import io
import os
import re
import resource
import signal

import pytest
import torch

from nni_bap.errors import RunFolderError
from nni_bap.utils.atomic import (
    atomic_write,
    check_no_symlink,
    open_append,
    ordered,
    remove_stale_tmp,
    write_json,
)


def test_ordered_sorts_every_dict_and_keeps_a_state_dicts_metadata():
    """Issue 22 case 2: NNI's masks dict follows set order; ordered() makes the saved structure independent of it."""
    sd = torch.nn.Linear(2, 2).state_dict()
    value = {'b': [{'z': 1, 'a': 2}], 'a': (collections.OrderedDict([('y', 1), ('x', sd)]),), 3: 'int key'}
    out = ordered(value)
    assert list(out) == [3, 'a', 'b'] and list(out['b'][0]) == ['a', 'z']
    inner = out['a'][0]
    assert type(inner) is collections.OrderedDict and list(inner) == ['x', 'y'] and isinstance(out['a'], tuple)
    assert list(inner['x']) == ['bias', 'weight'] and inner['x']._metadata == sd._metadata
    assert inner['x']['weight'] is sd['weight']  # tensors are not copied
    one, two = io.BytesIO(), io.BytesIO()
    torch.save(ordered({'m2': torch.ones(1), 'm1': torch.zeros(1)}), one)
    torch.save(ordered({'m1': torch.zeros(1), 'm2': torch.ones(1)}), two)
    assert one.getvalue() == two.getvalue()


def test_write_json_sorts_keys(tmp_path):
    write_json(tmp_path / 'r.json', {'b': 1, 'a': {'d': 2, 'c': 3}})
    assert (tmp_path / 'r.json').read_text() == '{\n  "a": {\n    "c": 3,\n    "d": 2\n  },\n  "b": 1\n}'


def test_a_write_that_hits_a_full_disk_names_the_file_and_leaves_nothing(tmp_path):
    """Issue 22 case 6: torch.save on a full disk raised the zip writer's RuntimeError (a 4 kB file-size limit stands
    for the full disk: writes fail with EFBIG)."""
    path = tmp_path / 'model.pt'
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, old_limit[1]))
    try:
        with pytest.raises(RunFolderError, match=re.escape(f'cannot write {path} (disk full or file too large?): ')):
            atomic_write(path, lambda fh: torch.save({'w': torch.zeros(10_000)}, fh))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert os.listdir(tmp_path) == []


def test_remove_stale_tmp_removes_only_temporary_files(tmp_path):
    for name in ('.model.int8.onnx.k2j3h4.tmp', '.report.json.x.tmp', 'keep.tmp', 'model.pt'):
        (tmp_path / name).write_text('x')
    assert remove_stale_tmp(tmp_path) == ['.model.int8.onnx.k2j3h4.tmp', '.report.json.x.tmp']
    assert sorted(os.listdir(tmp_path)) == ['keep.tmp', 'model.pt']


def test_links_are_refused_not_followed(tmp_path):
    """Issue 22 case 4: bap.log planted as a link to a file outside the run received the log."""
    victim = tmp_path / 'victim.txt'
    victim.write_text('victim\n')
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'bap.log').symlink_to(victim)
    with pytest.raises(RunFolderError, match='bap.log is a symbolic link'):
        open_append(run / 'bap.log')
    os.mkfifo(run / 'fifo.log')
    with pytest.raises(RunFolderError, match='fifo.log is not a plain file'):
        open_append(run / 'fifo.log')  # a FIFO would block the writer forever
    with open_append(run / 'plain.log') as fh:
        fh.write('line\n')
    assert (run / 'plain.log').read_text() == 'line\n' and victim.read_text() == 'victim\n'
    (run / 'sub').symlink_to(tmp_path)
    with pytest.raises(RunFolderError, match='sub is a symbolic link'):
        check_no_symlink(run, run / 'sub' / 'natural-0.5')
    check_no_symlink(run, run / 'agp-seed0' / 'natural-0.5')  # not there yet: fine
