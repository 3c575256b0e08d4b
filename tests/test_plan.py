"""Issue 21: latency-targeted channel plans. The allocation and the table's prediction are pure and tested on
made-up numbers; the plan itself is measured on a tiny model: its config_list is plain NNI input, the planned model
meets the latency budget in onnxruntime, and no layer goes below one block. The block is forced (16), whatever CPU
runs the tests."""
import copy
import json

import numpy as np
import pytest
import torch
import yaml
from nni.compression.pruning import L1NormPruner
from torch import nn

from nni_bap.cli.config import RunConfig
from nni_bap.cli.main import main
from nni_bap.deploy.allocate import allocate
from nni_bap.deploy.importance import kept_importance, layer_scores, unit_scores
from nni_bap.deploy.latency import LatencyTable, layer_model, measure_layer_us
from nni_bap.deploy.layers import layer_flops, layer_shapes, layer_widths
from nni_bap.deploy.plan import make_plan, plan_units, unit_options, verify_plan
from nni_bap.errors import ConfigError
from nni_bap.export import export_onnx, onnx_efficiency
from nni_bap.export.speedup import speed_up
from nni_bap.models import MODELS, SmallResNet
from nni_bap.pruning.compat import finalize

BLOCK = 16


class Wide(nn.Module):
    """A stem reading 3 channels, then two wide convolutions that dominate the cost, then a linear head."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, input_size: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(16, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * (input_size // 2) ** 2, num_classes))

    def forward(self, x):
        return self.head(self.b(self.a(self.stem(x))))


CONVS = [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.5}, {'exclude': True, 'op_names': ['head.1']}]


def test_layers_follow_their_units_through_residual_adds_and_flatten():
    model = SmallResNet(blocks=2)
    units, alone = plan_units(model, [{'op_types': ['Conv2d'], 'sparse_ratio': 0.5}], BLOCK)
    assert [u.name for u in units] == ['layers.2.conv1', 'channels-1', 'layers.3.conv1', 'layers.4.conv1',
                                       'channels-2', 'layers.5.conv1'] and 'stem.0 reads fewer' in alone['channels-0']
    layers = {s.name: s for s in layer_shapes(model, (3, 32, 32), units)}
    assert (layers['layers.3.conv1'].in_unit, layers['layers.3.conv1'].out_unit) == ('channels-1', 'layers.3.conv1')
    assert (layers['layers.4.shortcut.0'].in_unit, layers['layers.5.conv2'].in_unit) == ('channels-1', 'layers.5.conv1')
    assert layers['fc.1'].in_unit == 'channels-2' and layers['stem.0'].in_unit is None
    assert layers['layers.4.conv1'].in_size == (16, 16) and layers['layers.4.conv1'].out_size == (8, 8)
    wide = Wide()
    u, _ = plan_units(wide, CONVS, BLOCK)
    head = [s for s in layer_shapes(wide, (3, 16, 16), u) if s.name == 'head.1'][0]
    assert head.in_unit == 'b.0' and head.in_per_channel == 64 and layer_widths(head, {'b.0': 16}) == (1024, 10)
    assert unit_options(u[0], BLOCK) == [16, 32, 48, 64]


def test_flops_as_onnx_counts_them(tmp_path):
    wide = Wide().eval()
    u, _ = plan_units(wide, CONVS, BLOCK)
    shapes = layer_shapes(wide, (3, 16, 16), u)
    path = export_onnx(wide, str(tmp_path / 'w.onnx'), torch.rand(2, 3, 16, 16)).path
    assert sum(layer_flops(s, s.in_channels, s.out_channels) for s in shapes) == onnx_efficiency(path)['flops']


def test_table_predicts_dense_minus_what_each_layer_saves():
    """Pure: a layer whose input and output both narrow is priced at that pair (not the sum of two savings)."""
    wide = Wide()
    u, _ = plan_units(wide, CONVS, BLOCK)
    shapes = layer_shapes(wide, (3, 16, 16), u)
    entries = {}
    for s in shapes:
        for cin in (16, 32, 48, 64, 1024, 2048, 3072, 4096, 3):
            for cout in (10, 16, 32, 48, 64):
                entries[(s.name, cin, cout, 1)] = float(cin * cout)  # cost proportional to the pair
    table = LatencyTable(entries, {1: 10.0}, {})
    both = table.predict_ms(shapes, {'a.0': 32, 'b.0': 16}, 1)
    saved = (16 * 64 - 16 * 32) + (64 * 64 - 32 * 16) + (4096 * 10 - 1024 * 10)
    assert both == pytest.approx(10.0 - saved / 1e3)
    assert table.predict_ms(shapes, {}, 1) == 10.0
    back = LatencyTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert back.entries == table.entries and back.dense_ms == table.dense_ms


def test_allocation_exhaustive_and_greedy_meet_the_budget():
    options = {'x': [16, 32, 48, 64], 'y': [16, 32, 48, 64], 'z': [16, 32]}
    worth = {'x': 1.0, 'y': 3.0, 'z': 2.0}

    def value(u, w):
        return worth[u] * np.sqrt(w)

    def latency(widths):
        return {1: widths['x'] * widths['y'] / 64 + widths['y'] + widths['z'], 64: 2.0 * widths['x'] + widths['z']}

    budget = {1: 70.0, 64: 100.0}
    exact = allocate(options, value, latency, budget)
    greedy = allocate(options, value, latency, budget, exhaustive_limit=1)
    for a in (exact, greedy):
        assert a.feasible and all(a.latency_ms[b] <= budget[b] for b in budget)
        assert all(a.widths[u] in options[u] for u in options)
    best = max((value('x', x) + value('y', y) + value('z', z), (x, y, z)) for x in options['x'] for y in options['y']
               for z in options['z'] if all(v <= budget[b] for b, v in latency({'x': x, 'y': y, 'z': z}).items()))
    assert exact.method == 'exhaustive' and exact.importance == pytest.approx(best[0])
    assert greedy.method == 'greedy' and greedy.importance <= exact.importance + 1e-9
    none = allocate(options, value, latency, {1: 1.0, 64: 1.0})
    assert not none.feasible and none.widths == {'x': 16, 'y': 16, 'z': 16}


def test_importance_sums_a_group_and_keeps_its_best_channels():
    model = SmallResNet(blocks=1)
    with torch.no_grad():
        model.layers[2].conv1.weight.mul_(0)
        model.layers[2].conv1.weight[5] = 1.0
    scores = layer_scores(model, ['layers.2.conv1', 'layers.2.conv2', 'layers.2.shortcut.0'], 'l1')
    assert float(scores['layers.2.conv1'][5]) == pytest.approx(64.0) and float(scores['layers.2.conv2'].mean()) == pytest.approx(1.0)
    units, _ = plan_units(model, [{'op_types': ['Conv2d'], 'sparse_ratio': 0.5}], BLOCK)
    per = unit_scores([u for u in units if u.name.startswith(('layers.2', 'channels-2'))], scores)
    assert kept_importance(per['layers.2.conv1'], 1) == pytest.approx(64.0)
    assert kept_importance(per['channels-2'], 64) == pytest.approx(128.0)  # two layers, each averaging 1
    data = [(torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,)))]
    taylor = layer_scores(model, ['layers.2.conv1'], 'taylor', data)['layers.2.conv1']
    assert taylor.shape == (64,) and float(taylor.sum()) > 0
    with pytest.raises(ValueError, match='taylor importance needs training batches'):
        layer_scores(model, ['layers.2.conv1'], 'taylor')


def test_layer_model_runs_and_is_timed():
    wide = Wide()
    u, _ = plan_units(wide, CONVS, BLOCK)
    conv = [s for s in layer_shapes(wide, (3, 16, 16), u) if s.name == 'b.0'][0]
    import onnx
    onnx.checker.check_model(onnx.load_from_string(layer_model(conv, 64, 16)), full_check=True)
    wide16, full = measure_layer_us(conv, 16, 16, 8, repeats=20), measure_layer_us(conv, 64, 64, 8, repeats=20)
    assert 0 < wide16 < full  # 16x fewer multiply-adds: faster whatever the CPU


@pytest.fixture(scope='module')
def planned(tmp_path_factory):
    folder = tmp_path_factory.mktemp('plan')
    torch.manual_seed(0)
    model = Wide().eval()
    dense = export_onnx(model, str(folder / 'dense.onnx'), torch.rand(8, 3, 16, 16)).path
    plan, table = make_plan(model, CONVS, (3, 16, 16), 2.0, dense, batches=(8,), align=BLOCK)
    plan.measured = verify_plan(model, plan, dense, str(folder / 'plan.onnx'), torch.rand(8, 3, 16, 16),
                                rounds={8: 200})
    return model, plan, table


def test_plan_meets_its_budget_measured_and_keeps_whole_blocks(planned):
    _, plan, table = planned
    assert 'stem.0 reads fewer than 16 channels' in plan.left_alone['stem.0']  # left alone, as alignment does
    assert set(plan.widths) == {'a.0', 'b.0'} and all(w % BLOCK == 0 and w >= BLOCK for w in plan.widths.values())
    assert plan.predicted_ms[8] <= plan.dense_ms[8] / 2.0 and plan.predicted_speedup[8] >= 2.0
    m = plan.measured['batches'][8]
    # the planned model, measured beside the dense one: 2.08-2.17x idle, 1.77x once in a full run on a loaded machine;
    # how close the prediction comes is the benchmark's (plan_latency_prediction_error); here the plan must pay
    assert m['measured_speedup'] >= 1.6, m
    assert plan.measured['onnx_flops'] == plan.flops['plan'] and table.context['seconds'] > 0
    assert all(layer['in'] % BLOCK == 0 or layer['in'] == 3 for name, layer in plan.layer_widths.items()
               if name != 'head.1')


def test_plan_config_list_is_plain_nni_input(planned):
    model, plan, _ = planned
    entries = yaml.safe_load(yaml.safe_dump(plan.config_list))
    assert all(set(e) <= {'op_names', 'sparse_ratio', 'dependency_group_id'} for e in entries)
    pruner = L1NormPruner(copy.deepcopy(model), entries)
    _, masks = pruner.compress()
    kept = {n: int((m['weight'].flatten(1) != 0).any(1).sum()) for n, m in masks.items()}
    assert kept == {n: plan.widths[n] for n in kept} and set(kept) == {u for u, w in plan.widths.items() if w < 64}
    small = speed_up(finalize(pruner), masks, torch.rand(4, 3, 16, 16)).model
    assert small.b[0].out_channels == plan.widths['b.0'] and small.a[0].out_channels == plan.widths['a.0']


def test_unreachable_speedup_refused_with_the_fastest(planned, tmp_path):
    model, _, table = planned
    with pytest.raises(ConfigError, match=r'no plan with widths in multiples of 16 channels is predicted to reach '
                                          r'100x: the fastest .* reaches \d+\.\d+x at batch 8'):
        make_plan(model, CONVS, (3, 16, 16), 100.0, 'unused.onnx', batches=(8,), align=BLOCK, table=table)
    with pytest.raises(ConfigError, match='speedup must be > 1'):
        make_plan(model, CONVS, (3, 16, 16), 1.0, 'unused.onnx', batches=(8,), align=BLOCK, table=table)


def test_bap_plan_command_writes_a_config_bap_prune_takes(tmp_path, monkeypatch):
    MODELS.register('wide_toy')(Wide)
    try:
        cfg = tmp_path / 'cfg.yaml'
        cfg.write_text('model: wide_toy\ndataset: digits\nbase_pruner: l1\ndense_epochs: 1\nepochs: 1\ntotal_times: 1\n'
                       'train_limit: 128\ntest_limit: 64\nmethod: natural\nalign: 16\n'
                       'config_list: [{op_types: [Conv2d], sparse_ratio: 0.5}]\n')
        out = tmp_path / 'plan'
        assert main(['--quiet', 'plan', str(cfg), '--speedup', '1.5', '--out', str(out), '--batch', '8',
                     '--no-verify']) == 0
        plan = json.loads((out / 'plan.json').read_text())
        table = json.loads((out / 'latency_table.json').read_text())
        assert table['context']['onnxruntime'] and 'avx2' in table['context']['cpu'] and table['context']['block'] == 16
        assert plan['predicted_speedup']['8'] >= 1.5 and not plan['table']['reused'] and plan['measured'] == {}
        assert yaml.safe_load((out / 'config_list.yaml').read_text()) == plan['config_list']
        assert '# batch 8: dense' in (out / 'config_list.yaml').read_text()
        assert main(['--quiet', 'plan', str(cfg), '--speedup', '1.5', '--out', str(out), '--batch', '8',
                     '--no-verify']) == 0
        assert json.loads((out / 'plan.json').read_text())['table']['reused']  # the table is measured once
        run = RunConfig.from_dict(yaml.safe_load((out / 'plan.yaml').read_text()))
        assert [dict(e) for e in run.config_list] == plan['config_list'] and run.align == 16
        assert main(['--quiet', 'prune', str(out / 'plan.yaml'), '--out', str(tmp_path / 'run')]) == 0
        model = torch.load(tmp_path / 'run' / 'model.pt', weights_only=True)['state_dict']
        for unit, width in plan['widths'].items():
            assert int((model[f'{unit}.weight'].flatten(1) != 0).any(1).sum()) == width
        assert main(['plan', str(cfg), '--speedup', '0.9', '--out', str(out)]) == 2
    finally:
        MODELS.remove('wide_toy')
