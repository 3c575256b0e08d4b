"""Issue 20: the training step of every BAP variant over an FGSM-RS step, measured side by side.

Each line times one variant's step against an FGSM-RS (eps 0.1) step in alternation (after warm-up, medians),
on the same LeNet-5, batch 128, one thread; a line is the median of three such paired measurements. Every
variant is timed on two models, a naturally trained LeNet-5 and one adversarially trained (FGSM-RS eps 0.2,
3 epochs), where DeepFool needs more of its iterations; a variant's ratio is the larger. A timed unit is two
consecutive training steps (a norm mix alternates its norms between them), as the pruner takes them: clean
loss, AEs from the variant's generator, ``0.5 * clean + 0.5 * AE`` (plus the KL term's clean forward when the
variant has one), backward, optimizer step.
Variants over :data:`GOAL_FGSM_RS` are not eligible for selection (``python -m examples.blind`` reads the
ratios from ``benchmarks/blind_budgets_step.json``, which this writes; the committed file was measured with one
round per line, before :data:`ROUNDS` was added: see ``examples/blind/README.md``).

Run alone: ``OMP_NUM_THREADS=1 python -m benchmarks.blind_budgets_step [METHOD ...]``.
"""
from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import torch
from torch import nn

from nni_bap.pruning.generators import UniformGenerator
from nni_bap.pruning.kl_term import clean_logits, kl_divergence
from nni_bap.pruning.methods import METHODS, parse_method

from .common import line, paired

BATCH = 128
GOAL_FGSM_RS = 1.5
REPS = 15
#: Paired measurements per (variant, model); the median ratio is kept (the machine is shared: ratios vary).
ROUNDS = 3
RESULTS = Path(__file__).with_name('blind_budgets_step.json')
#: Every variant issue 20 screens (BAP presets and suffixes) and the baselines, as method names.
VARIANTS = ('bap', 'bap-c3.0', 'bap-l2cap', 'bap-linf', 'bap-linfcap', 'bap-margin', 'bap-margin-s1.5',
            'bap-margin-n1', 'bap-margin-kl1', 'bap-margin-cadaptive', 'bap-margin-cadaptive-s1.5',
            'bap-margin-cadaptive-s2', 'bap-mix', 'bap-mixcap', 'bap-mixsplit', 'bap-mixmargin', 'bap-both',
            'bap-bothsplit', 'adversarial-fgsm0.2', 'adversarial-fgsm0.3', 'adversarial-pgd0.1')


def generator_of(method: str):
    """(AE generator, KL weight) of a method name, built as the pruner builds it (the family's generator class)."""
    family, args = parse_method(method)
    gen = METHODS.entry(family).obj(**args)
    return gen, float(getattr(gen, 'kl_weight', 0.0))


def _call_arguments(gen, index, step: int) -> Dict:
    """What the pruner passes a generator besides the batch (dataset indices, the training step)."""
    kw = {'index': index} if getattr(gen, 'warm_start', False) else {}
    if getattr(gen, 'needs_step', False):
        kw['step'] = step
    return kw


def stepper(model: nn.Module, method: str, x, y) -> Callable[[], None]:
    """Two training steps of ``method`` on ``(x, y)`` (a fresh copy of ``model``)."""
    model = copy.deepcopy(model).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen, kl = generator_of(method)
    count = [0]

    def one():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        x_adv, _ = gen(model, x, y, **_call_arguments(gen, torch.arange(len(x)), count[0]))
        logits = model(x_adv)
        loss = 0.5 * loss + 0.5 * nn.functional.cross_entropy(logits, y)
        if kl:
            loss = loss + kl * kl_divergence(clean_logits(model, x), logits)
        loss.backward()
        opt.step()
        count[0] += 1

    def two():
        one()
        one()
    return two


def adversarially_trained(model: nn.Module, data, epochs: int = 3, eps: float = 0.2, seed: int = 0) -> nn.Module:
    """``model`` after ``epochs`` of FGSM-RS adversarial training (``0.5 * clean + 0.5 * AE``, eps 0.2): the state a
    model is in during adversarial pruning, where DeepFool needs more of its iterations than on a natural model."""
    torch.manual_seed(seed)
    model = copy.deepcopy(model).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = UniformGenerator('fgsm', eps=eps)
    ce = nn.functional.cross_entropy
    for _ in range(epochs):
        for i in range(0, len(data.x_train), 128):
            xb, yb = data.x_train[i:i + 128], data.y_train[i:i + 128]
            x_adv, _ = gen(model, xb, yb)
            opt.zero_grad()
            (0.5 * ce(model(xb), yb) + 0.5 * ce(model(x_adv), yb)).backward()
            opt.step()
    return model.eval()


def _rounds(model: nn.Module, method: str, x, y):
    """Median over :data:`ROUNDS` paired measurements: (variant ms, FGSM-RS ms, ratio) of the median round."""
    results = []
    for _ in range(ROUNDS):
        torch.manual_seed(0)
        ta, tb = paired(stepper(model, method, x, y), stepper(model, 'adversarial-fgsm0.1', x, y), reps=REPS)
        results.append((ta, tb, ta / tb))
    return sorted(results, key=lambda t: t[2])[len(results) // 2]


def run(models: Dict[str, nn.Module], data, methods: Sequence[str] = VARIANTS) -> List[Dict]:
    """Each method's step over FGSM-RS's on every model; a method's ratio for selection is its largest."""
    torch.manual_seed(0)
    x, y = data.x_train[:BATCH], data.y_train[:BATCH]
    out, by_model = [], {name: {} for name in models}
    for method in methods:
        for name, model in models.items():
            ta, tb, r = _rounds(model, method, x, y)
            out.append(line(f'blind_budgets_step {method} vs fgsm_rs0.1 ({name} LeNet-5)', r, ta / 2, tb / 2,
                            f'<= {GOAL_FGSM_RS}', r <= GOAL_FGSM_RS))
            by_model[name][method] = r
    ratios = {m: max(by_model[n][m] for n in models) for m in methods}
    ratios['adversarial-fgsm0.1'] = 1.0
    payload = {'ratios': ratios, 'by_model': by_model, 'goal': GOAL_FGSM_RS, 'batch': BATCH,
               'threads': torch.get_num_threads(), 'reps': REPS, 'rounds': ROUNDS,
               'lines': [r['text'] for r in out]}
    RESULTS.write_text(json.dumps(payload, indent=2) + '\n')
    return out


if __name__ == '__main__':
    from .common import data, trained_lenet
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
    d = data()
    natural = trained_lenet(d)
    run({'natural': natural, 'adversarially trained': adversarially_trained(natural, d)}, d, sys.argv[1:] or VARIANTS)
