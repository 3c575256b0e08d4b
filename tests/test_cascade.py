"""The worst case as a cascade: it equals every attack run on every sample, while attacking fewer."""
import pytest
import torch
from torch import nn

from nni_bap.evaluation.robustness import evaluate_robustness


def _mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return model.eval()


def test_cascade_gives_the_worst_case_of_every_attack_on_every_sample(digits):
    """The cascade attacks only the samples still robust, yet its worst case equals running every attack on
    every correctly classified sample (deterministic attacks: no random start)."""
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(digits.x_train), digits.y_train).backward()
        opt.step()
    spec = {'linf': {'budgets': [0.0, 0.05, 0.1, 0.15], 'key_points': [0.05, 0.1],
                     'attacks': {'fmn': {'steps': 10}, 'apgd-ce': {'steps': 10, 'random_start': False},
                                 'apgd-dlr': {'steps': 10, 'random_start': False}, 'fgsm': {}}},
            'l2': {'budgets': [0.0, 0.3, 0.6], 'key_points': [0.3, 0.6], 'fixed_budgets': [0.3, 0.6],
                   'attacks': {'deepfool': {'steps': 10}, 'apgd-ce': {'steps': 10, 'random_start': False},
                               'pgd_l2': {'steps': 5, 'random_start': False}}}}
    x, y = digits.x_test[:150], digits.y_test[:150]
    fast = evaluate_robustness(model, x, y, spec, progress=False, huge_eps=0)
    full = evaluate_robustness(model, x, y, spec, progress=False, huge_eps=0, cascade=False)
    assert fast['curves'] == full['curves'] and fast['key_points'] == full['key_points']
    linf_runs = {(s['attack'], s['budget']) for s in fast['cascade']['linf'] if s['budget']}
    assert linf_runs == {(a, b) for a in ('APGD', 'FGSM') for b in (0.05, 0.1, 0.15)}  # every budget of the grid
    assert fast['coverage'] == 'every budget'  # l2's fixed budgets, given, are its whole grid too
    ran = lambda rep: sum(s['ran_on'] for log in rep['cascade'].values() for s in log if s['budget'])
    assert ran(fast) < 0.8 * ran(full)


class _Threshold(nn.Module):
    """Class 1 when the first input element exceeds 0.5, else class 0: the distance to the boundary is known."""

    def forward(self, x):
        s = x.flatten(1)[:, :1] - 0.5
        return torch.cat([-s, s], dim=1) * 10


def _cascade(norm='linf'):
    from nni_bap.evaluation.cascade import Cascade
    x = torch.full((4, 1, 2, 2), 0.2)
    x[:, 0, 0, 0] = torch.tensor([0.1, 0.3, 0.45, 0.7])  # distances to 0.5: 0.4, 0.2, 0.05; the last is misclassified
    y = torch.zeros(4, dtype=torch.long)
    model = _Threshold()
    onnx_like = lambda a: (a.reshape(len(a), -1)[:, 0] > 0.5).astype(int)  # noqa: E731 - the same function, numpy
    return Cascade(model, x, y, norm, {'torch': lambda a: model(torch.from_numpy(a)).argmax(1).numpy(),
                                       'onnx': onnx_like}, batch_size=2), x, y


class _Push:
    """A stand-in attack moving the first element up by ``step`` (a fixed-budget attack at budget ``eps``)."""

    def __init__(self, step):
        self.step, self.calls = step, []

    def __call__(self, x, y):
        self.calls.append(len(x))
        out = x.clone()
        out[:, 0, 0, 0] += self.step
        return out


class _MinNorm:
    """A stand-in minimum-norm attack: every sample pushed just across the boundary (distance + 0.01)."""

    def attack(self, x, y):
        out = x.clone()
        out[:, 0, 0, 0] = 0.51
        return type('Found', (), {'x_adv': out})()


def test_min_norm_attack_sets_each_samples_smallest_broken_budget():
    casc, x, y = _cascade()
    assert casc.broken['torch'].tolist() == [float('inf')] * 3 + [0.0]  # the misclassified sample is broken at 0
    own = casc.min_norm(_MinNorm())
    assert own[:3] == pytest.approx([0.41, 0.21, 0.06], abs=1e-6) and own[3] == 0
    assert casc.broken['torch'][:3] == pytest.approx([0.41, 0.21, 0.06], abs=1e-6)
    assert casc.broken['onnx'][:3] == pytest.approx([0.41, 0.21, 0.06], abs=1e-6)  # re-classified side by side
    assert [float(casc.robust(b).mean()) for b in (0.0, 0.05, 0.1, 0.3, 0.5)] == [0.75, 0.75, 0.5, 0.25, 0.0]
    assert casc.log[-1]['ran_on'] == 3 and casc.log[-1]['found'] == 1.0


def test_fixed_budget_attack_records_at_its_budget_and_skips_broken_samples():
    casc, x, y = _cascade()
    weak = _Push(0.1)  # fools only the sample 0.05 from the boundary
    assert casc.fixed(weak, 0.1) == 0.5 and weak.calls == [2, 1]  # 3 robust samples attacked, in batches of 2
    assert casc.broken['torch'][2] == 0.1  # recorded at the budget, not at the 0.1 push's own norm
    strong = _Push(0.3)
    assert casc.fixed(strong, 0.3) == 0.25 and sum(strong.calls) == 2  # only the 2 still robust at 0.3
    assert casc.fixed(_Push(0.3), 0.3, cascade=False) == 0.25  # every correct sample: the same worst case
    assert [s['ran_on'] for s in casc.log] == [3, 2, 3]


def test_cut_curve_of_the_min_norm_perturbations():
    casc, x, y = _cascade()
    eta = torch.zeros_like(x)
    eta[:, 0, 0, 0] = 0.45  # pushes every sample up by 0.45 when not cut
    assert casc.cut(eta, [0.0, 0.1, 0.25, 0.45]) == [0.75, 0.5, 0.25, 0.0]
    assert casc.broken['torch'][:3].tolist() == [0.45, 0.25, 0.1]  # cut points that fool are witnesses
