"""BAP training step vs PGD-10 adversarial-pruning step, and what each DeepFool optimisation buys."""
from __future__ import annotations

import copy
import inspect
from typing import Dict, List

import torch
from torch import nn

from nni_bap.generators import BlindGenerator, UniformGenerator
from nni_bap.pruner import BAPPruner

from .common import line, paired

BATCH = 128
DEFAULTS = {k: v.default for k, v in inspect.signature(BAPPruner).parameters.items()
            if k in ('attack_steps', 'overshoot', 'candidates', 'cutoff', 'scale')}


def _default_generator(**over) -> BlindGenerator:
    args = dict(steps=DEFAULTS['attack_steps'], overshoot=DEFAULTS['overshoot'], candidates=DEFAULTS['candidates'],
                cutoff=DEFAULTS['cutoff'], scale=DEFAULTS['scale'])
    args.update(over)
    return BlindGenerator(**args)


def _stepper(model: nn.Module, gen, x, y):
    model = copy.deepcopy(model).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        if gen is not None:
            x_adv, _ = gen(model, x, y)
            loss = 0.5 * loss + 0.5 * nn.functional.cross_entropy(model(x_adv), y)
        loss.backward()
        opt.step()
    return step


def run(model: nn.Module, data) -> List[Dict]:
    x, y = data.x_train[:BATCH], data.y_train[:BATCH]
    pgd = _stepper(model, UniformGenerator('pgd', eps=0.1, steps=10), x, y)
    out = []
    variants = [
        ('bap_step_default_vs_pgd10', _default_generator(), '<= 1.0', lambda r: r <= 1.0),
        ('  info: all classes, whole batch every iteration (reference) vs pgd10',
         _default_generator(candidates=None, drop_crossed=False), 'info', None),
        ('  info: all classes, crossed samples dropped vs pgd10', _default_generator(candidates=None), 'info', None),
        ('  info: top-2 candidates vs pgd10', _default_generator(candidates=2), 'info', None),
    ]
    natural = _stepper(model, None, x, y)
    a, b = paired(natural, pgd)
    out.append(line('  info: natural step vs pgd10', a / b, a, b, 'info', True))
    for name, gen, goal, check in variants:
        a, b = paired(_stepper(model, gen, x, y), pgd)
        out.insert(len(out) if check is None else 0, line(name, a / b, a, b, goal, check(a / b) if check else True))
    return out
