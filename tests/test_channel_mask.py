"""Issue 13 part 1: channel-consistent structured pruning (BatchNorm masked with its convolution's channels)."""
import copy

import pytest
import torch
from nni.compression.pruning import AGPPruner, L1NormPruner
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nni_bap.errors import BatchNormDriftError
from nni_bap.export.speedup import speed_up
from nni_bap.models import build_model
from nni_bap.pruning.channel_mask import (
    apply_channel_masks,
    channel_groups,
    install_channel_masks,
)
from nni_bap.pruning.compat import finalize
from nni_bap.pruning.dependency import structured_dependency_config
from nni_bap.pruning.training import make_evaluator

CFG = [{'op_types': ['Conv2d'], 'sparse_ratio': 0.5}]
#: BatchNorm -> channels zeroed at 50% of every conv's channels (16/32/64 channels per stage).
EXPECTED_DEAD = {'stem.1': 8, 'layers.0.bn1': 8, 'layers.0.bn2': 8, 'layers.1.bn1': 16, 'layers.1.bn2': 16,
                 'layers.1.shortcut.1': 16, 'layers.2.bn1': 32, 'layers.2.bn2': 32, 'layers.2.shortcut.1': 32}


def _fit(model, x, y, steps=5, lr=1e-2):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for i in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[i % 2::2]), y[i % 2::2]).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope='module')
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)


@pytest.fixture(scope='module')
def dense(batch):
    """A small ResNet trained a few steps, so that its BatchNorm shifts are not zero."""
    torch.manual_seed(0)
    return _fit(build_model('resnet_small', 3, 10, 32), *batch)


def _rel(a, b):
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1.0)


def _prune_and_train(dense, batch, masking):
    """L1 at 50% of the channels (dependency groups), then training with the wrapped model."""
    model = copy.deepcopy(dense)
    pruner = L1NormPruner(model, structured_dependency_config(model, CFG))
    _, masks = pruner.compress()
    handle = install_channel_masks(model) if masking else None
    _fit(model, *batch)
    with torch.no_grad():
        during = model(batch[0])  # the masked model as training sees it (hooks on, wrappers on)
    counts = handle.remove() if handle else {}
    return finalize(pruner).eval(), masks, during, counts


def test_channel_masks_make_speedup_equal_the_trained_masked_model(dense, batch):
    plain, masks, during, counts = _prune_and_train(dense, batch, masking=True)
    assert counts == EXPECTED_DEAD
    sp = speed_up(plain, masks, batch[0][:8], check_inputs=[batch[0]])
    assert sp.bn_drift == 0.0
    with torch.no_grad():
        fast, masked = sp.model(batch[0]), plain(batch[0])
    assert _rel(fast, masked) <= 1e-5 and _rel(fast, during) <= 1e-5
    assert float(masked.abs().max()) > 0.05  # not a trivially zero model
    assert sp.model.layers[2].conv2.out_channels == 32 and sp.model.stem[0].out_channels == 8


def test_without_channel_masks_the_bn_shift_drifts_and_speedup_refuses_it(dense, batch):
    """Issue 24: the drift is measured and refused (one line saying what to do), unless accepted explicitly."""
    plain, masks, during, _ = _prune_and_train(dense, batch, masking=False)
    with pytest.raises(BatchNormDriftError, match='install_channel_masks') as info:
        speed_up(plain, masks, batch[0][:8], check_inputs=[batch[0]])
    assert info.value.bn_drift > 0.01 and '\n' not in str(info.value)
    sp = speed_up(plain, masks, batch[0][:8], check_inputs=[batch[0]], max_bn_drift=float('inf'))
    with torch.no_grad():
        fast = sp.model(batch[0])
    assert sp.bn_drift == pytest.approx(info.value.bn_drift, rel=0.2)  # partly measured on fresh random inputs
    assert _rel(fast, during) > 0.01


def test_channel_masks_follow_a_growing_agp_schedule(dense, batch):
    """The hooks read the NNI wrappers' masks at every forward pass, so they follow the schedule."""
    model = copy.deepcopy(dense)
    loader = DataLoader(TensorDataset(*batch), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    base = L1NormPruner(model, structured_dependency_config(model, CFG), evaluator=make_evaluator(model, loader,
                                                                                                  progress=False))
    scheduled = AGPPruner(base, 2, 3)
    handle = install_channel_masks(model)
    _, masks = scheduled.compress(max_steps=8, max_epochs=None)
    assert handle.remove() == EXPECTED_DEAD
    plain = finalize(scheduled).eval()
    assert all(not bn._forward_hooks for bn in plain.modules() if isinstance(bn, nn.BatchNorm2d))
    sp = speed_up(plain, masks, batch[0][:8], check_inputs=[batch[0]])
    assert sp.bn_drift == 0.0 and sp.max_abs_diff <= 1e-5 * max(float(plain(batch[0]).abs().max()), 1.0)


def test_apply_channel_masks_on_a_plain_model(dense, batch):
    model = copy.deepcopy(dense)
    pruner = L1NormPruner(model, structured_dependency_config(model, CFG))
    _, masks = pruner.compress()
    plain = finalize(pruner).eval()
    assert speed_up(plain, masks, batch[0][:8], max_bn_drift=float('inf')).bn_drift > 0.01
    assert apply_channel_masks(plain, masks) == EXPECTED_DEAD
    dead = (masks['stem.0']['weight'].flatten(1) == 0).all(1)
    assert float(plain.stem[1].weight[dead].abs().sum()) == 0.0 and float(plain.stem[1].bias[dead].abs().sum()) == 0.0
    assert float(plain.stem[1].bias[~dead].abs().sum()) > 0
    assert speed_up(plain, masks, batch[0][:8]).bn_drift == 0.0


def test_a_channel_one_branch_still_uses_is_kept(dense, batch):
    """Without dependency groups the two convolutions of a residual add mask different channels: only the
    channels both mask are removed by ModelSpeedup, so only those BatchNorm channels are zeroed (before this
    fix the parity reference zeroed all of them and the export failed with SpeedupParityError)."""
    model = copy.deepcopy(dense)
    pruner = L1NormPruner(model, CFG)
    _, masks = pruner.compress()
    plain = finalize(pruner).eval()
    assert {'stem.0', 'layers.0.conv2'} in channel_groups(plain)
    rows = {k: (masks[k]['weight'].flatten(1) == 0).all(1) for k in ('stem.0', 'layers.0.conv2')}
    both = rows['stem.0'] & rows['layers.0.conv2']
    assert int(rows['stem.0'].sum()) == 8 and int(both.sum()) < 8
    counts = apply_channel_masks(copy.deepcopy(plain), masks)
    assert counts['stem.1'] == counts['layers.0.bn2'] == int(both.sum())
    assert counts['layers.0.bn1'] == 8
    sp = speed_up(plain, masks, batch[0][:8], check_inputs=[batch[0]], max_bn_drift=float('inf'))
    assert sp.model.stem[0].out_channels == 16 - int(both.sum())


def test_dependency_groups_follow_chained_residual_adds(batch):
    """With two blocks per stage the second block's conv2 adds onto the first block's output: NNI's own group
    detection stops at the first add and leaves it out, so its channels would not match and ModelSpeedup could
    not remove them. Our groups (and ``structured_dependency_config``) include it."""
    from nni_bap.models import SmallResNet
    torch.manual_seed(0)
    model = SmallResNet(blocks=2).eval()
    groups = channel_groups(model)
    assert {'stem.0', 'layers.0.conv2', 'layers.1.conv2'} in groups
    assert {'layers.4.conv2', 'layers.4.shortcut.0', 'layers.5.conv2'} in groups
    pruner = L1NormPruner(model, structured_dependency_config(model, CFG))
    _, masks = pruner.compress()
    plain = finalize(pruner).eval()
    rows = [(masks[k]['weight'].flatten(1) != 0).any(1) for k in ('stem.0', 'layers.0.conv2', 'layers.1.conv2')]
    assert torch.equal(rows[0], rows[1]) and torch.equal(rows[0], rows[2]) and int(rows[0].sum()) == 8
    sp = speed_up(plain, masks, batch[0][:8], check_inputs=[batch[0]])
    assert sp.model.stem[0].out_channels == 8 and sp.model.layers[5].conv2.out_channels == 32


def test_prune_with_a_channel_pruner_exports_without_bn_drift(dense, batch, tmp_path):
    """`methods.prune` installs the channel masks for channel pruners: the exported model equals the masked one."""
    from nni_bap.export import export_onnx
    from nni_bap.pruning.prune import prune
    config_list = structured_dependency_config(dense, CFG)
    res = prune(dense, TensorDataset(*batch), config_list, method='bap', base_pruner='l1', epochs=2, total_times=2,
                batch_size=16, progress=False)
    bn = res.model.layers[0].bn1
    dead = (res.masks['layers.0.conv1']['weight'].flatten(1) == 0).all(1)
    assert int(dead.sum()) == 8 and float(bn.weight[dead].abs().sum() + bn.bias[dead].abs().sum()) == 0.0
    out = export_onnx(res.model, str(tmp_path / 'm.onnx'), batch[0][:4], masks=res.masks, validation_inputs=batch[0])
    assert out.structured and out.bn_drift == 0.0
