"""Issue 21: channel alignment. Channel pruners keep a multiple of the block in every pruned layer (dependency groups
share one width), a layer reading fewer channels than a block is left alone unless named, and it works through
BAPPruner, AdversarialPruner and NNI's AGP alike. The block width is forced here: nothing depends on this CPU."""
import pytest
import torch
from torch.utils.data import TensorDataset

from nni_bap.cli.config import RunConfig
from nni_bap.deploy.block import block_width, resolve_align
from nni_bap.errors import ConfigError
from nni_bap.export.speedup import speed_up
from nni_bap.models import SmallResNet, build_model
from nni_bap.pruning.align import align_config_list, aligned_ratio, aligned_width, channel_units
from nni_bap.pruning.prune import prune

CONVS = [{'op_types': ['Conv2d'], 'sparse_ratio': 0.6}]
STAGE1 = {'stem.0', 'layers.0.conv2', 'layers.1.conv2'}


@pytest.mark.parametrize('channels, ratio, align, kept', [
    (64, 0.5, 16, 32), (64, 0.6, 16, 32), (64, 0.7, 16, 16), (64, 0.9, 16, 16), (64, 0.2, 16, 48),
    (64, 0.12, 16, 64), (64, 0.13, 16, 48), (32, 0.75, 16, 16), (16, 0.5, 16, 16), (16, 0.5, 8, 8), (6, 0.5, 16, 6),
    (120, 0.5, 16, 64), (84, 0.5, 16, 48), (20, 0.1, 16, 16), (64, 0.6, 1, 26), (64, 0.5, 1, 32)])
def test_aligned_width(channels, ratio, align, kept):
    """Nearest multiple of the block (halves up), never below one block nor above the layer; align 1 is NNI's."""
    assert aligned_width(channels, ratio, align) == kept


def test_aligned_ratio_is_exact_under_nni_rounding():
    """NNI removes int(channels * ratio) channels: the ratio must hit the kept count exactly (1 - 16/48 does not)."""
    for channels in range(1, 257):
        for kept in range(1, channels + 1):
            r = aligned_ratio(channels, kept)
            assert channels - int(channels * r) == kept and abs(r - (1 - kept / channels)) < 1e-12
    with pytest.raises(ValueError):
        aligned_ratio(16, 0)


def _kept(entries, model):
    shapes = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    return {e['op_names'][0]: shapes[e['op_names'][0]] - int(shapes[e['op_names'][0]] * e['sparse_ratio'])
            for e in entries}


def test_config_list_aligned_with_groups_and_the_stem_left_alone():
    model = SmallResNet(blocks=2)
    entries = align_config_list(model, CONVS, 8)
    kept = _kept(entries, model)
    assert kept == {'layers.0.conv1': 8, 'layers.1.conv1': 8, 'layers.2.conv1': 16, 'layers.3.conv1': 16,
                    'layers.2.conv2': 16, 'layers.2.shortcut.0': 16, 'layers.3.conv2': 16,
                    'layers.4.conv1': 24, 'layers.5.conv1': 24,  # 64 * 0.4 = 25.6 -> 24
                    'layers.4.conv2': 24, 'layers.4.shortcut.0': 24, 'layers.5.conv2': 24}
    assert not STAGE1 & set(kept)  # the stem reads 3 channels: its whole residual group is left alone
    groups = {}
    for e in entries:
        groups.setdefault(e.get('dependency_group_id'), set()).add(e['sparse_ratio'])
    assert all(len(r) == 1 for g, r in groups.items() if g is not None) and len(groups) == 3
    # at 16 the 16-channel layers cannot lose a block; named in op_names, the stem's group is pruned after all
    assert set(_kept(align_config_list(model, CONVS, 16), model).values()) == {16, 32}
    asked = align_config_list(model, CONVS + [{'op_names': ['stem.0'], 'sparse_ratio': 0.5}], 8)
    assert {n: k for n, k in _kept(asked, model).items() if n in STAGE1} == dict.fromkeys(STAGE1, 8)
    units = {u.name: u for u in channel_units(model, CONVS, 16)}
    assert 'stem.0 reads fewer than 16 channels' in units['channels-0'].left_alone
    assert 'no more than one block' in units['layers.0.conv1'].left_alone


def test_align_one_is_the_plain_dependency_config_and_nothing_left_refuses():
    model = SmallResNet(blocks=1)
    plain = align_config_list(model, CONVS, 1)
    assert len(plain) == 9 and {e['sparse_ratio'] for e in plain} == {0.6}
    with pytest.raises(ConfigError, match='nothing left to prune once channels are aligned to multiples of 64'):
        align_config_list(model, CONVS, 64)
    lenet = build_model('lenet5', 1, 10, 28)  # convs read 1 and 6 channels: only the dense layers are pruned
    assert _kept_linear(align_config_list(lenet, [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.5}], 16),
                        lenet) == {'classifier.1': 64, 'classifier.3': 48}


def _kept_linear(entries, model):
    shapes = dict(model.named_modules())
    return {e['op_names'][0]: shapes[e['op_names'][0]].out_features
            - int(shapes[e['op_names'][0]].out_features * e['sparse_ratio']) for e in entries}


@pytest.mark.parametrize('method, schedule', [('natural', 'agp'), ('adversarial', 'agp'), ('bap', 'linear')])
def test_every_pruner_reaches_aligned_widths(method, schedule):
    """NNI's AGP (natural), AdversarialPruner and BAPPruner all end at the aligned widths, groups alike; the sped-up
    model's every pruned convolution has a multiple of the block."""
    torch.manual_seed(0)
    model = SmallResNet(blocks=2, input_size=8).eval()
    data = TensorDataset(torch.rand(64, 3, 8, 8), torch.randint(0, 10, (64,)))
    entries = align_config_list(model, CONVS, 8)
    res = prune(model, data, entries, method=method, base_pruner='l1', schedule=schedule, epochs=1, total_times=2,
                batch_size=16, progress=False)
    kept = {n: int((m['weight'].flatten(1) != 0).any(1).sum()) for n, m in res.masks.items()}
    assert kept == _kept(entries, model) and all(k % 8 == 0 for k in kept.values())
    rows = [(res.masks[n]['weight'].flatten(1) != 0).any(1) for n in ('layers.4.conv2', 'layers.4.shortcut.0',
                                                                        'layers.5.conv2')]
    assert torch.equal(rows[0], rows[1]) and torch.equal(rows[0], rows[2])  # one group, the same channels
    small = speed_up(res.model, res.masks, data.tensors[0][:4]).model
    widths = {n: m.out_channels for n, m in small.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert all(w % 8 == 0 for w in widths.values()) and widths['stem.0'] == 16 and widths['layers.5.conv2'] == 24


def test_block_width_forced_and_the_config_key(monkeypatch):
    assert block_width({'avx512f': True, 'avx2': True}) == 16 and block_width({'avx2': True}) == 8
    assert block_width({}) == 8
    assert resolve_align('auto', {'avx512f': True}) == 16 and resolve_align(4) == 4 and resolve_align(1) == 1
    for bad in (0, -16, 'x', True, 2.5, None):
        with pytest.raises(ConfigError, match="align must be 'auto' or an integer >= 1"):
            resolve_align(bad)
    monkeypatch.setattr('nni_bap.deploy.block.cpu_features', lambda: {'avx512f': False, 'avx2': True})
    cfg = RunConfig.from_dict({'base_pruner': 'l1'})
    assert cfg.align == 8 and cfg.to_dict()['align'] == 8  # 'auto' resolved: the effective config says what ran
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.config_hash() != cfg.replace(align=16).config_hash()
    with pytest.raises(ConfigError, match='align must be'):
        RunConfig.from_dict({'align': 0})
