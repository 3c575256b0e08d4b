"""BAP training step vs the cheapest adversarial training (FGSM-RS) and vs PGD-10, and what each lever buys.

Every line is measured side by side (alternating, medians) on the same LeNet-5, batch and threads.
Run alone with ``OMP_NUM_THREADS=1 python -m benchmarks.bap_step``; ``BAP_BENCH_COMPILE=1`` adds the
``torch.compile`` lever (about a minute of compilation).
"""
from __future__ import annotations

import copy
import inspect
import os
from typing import Callable, Dict, List

import torch
from torch import nn

from nni_bap.models import build_model
from nni_bap.pruning.fused_loss import fused_adversarial_loss
from nni_bap.pruning.generators import BlindGenerator, UniformGenerator
from nni_bap.pruning.pruner import BAPPruner

from .common import info, line, paired

BATCH = 128
DEFAULTS = {k: v.default for k, v in inspect.signature(BAPPruner).parameters.items()
            if k in ('attack_steps', 'candidates')}
GOAL_FGSM_RS = 1.5


def _default_generator(**over) -> BlindGenerator:
    """BAP's generator with its defaults (the pruner's), some settings changed."""
    return BlindGenerator(**over)


def _stepper(model: nn.Module, gen, x, y, fused: bool = False) -> Callable[[], None]:
    """One adversarial-pruning training step as the pruners take it: clean loss, AEs, ``0.5 * clean + 0.5 * AE``."""
    model = copy.deepcopy(model).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    extra = {'index': torch.arange(len(x))} if getattr(gen, 'warm_start', False) else {}

    def step():
        opt.zero_grad()
        if gen is None:
            loss = nn.functional.cross_entropy(model(x), y)
        elif fused:
            loss, _ = fused_adversarial_loss(model, x, gen(model, x, y, **extra)[0], y)
        else:
            loss = nn.functional.cross_entropy(model(x), y)
            x_adv, _ = gen(model, x, y, **extra)
            loss = 0.5 * loss + 0.5 * nn.functional.cross_entropy(model(x_adv), y)
        loss.backward()
        opt.step()
    return step


def _ratio(name: str, a: Callable, b: Callable, goal: str = 'info', check=None, reps: int = 7) -> Dict:
    ta, tb = paired(a, b, reps=reps)
    return line(name, ta / tb, ta, tb, goal, check(ta / tb) if check else True)


def _pgd_lines(model: nn.Module, x, y) -> List[Dict]:
    pgd = _stepper(model, UniformGenerator('pgd', eps=0.1, steps=10), x, y)
    out = [_ratio('bap_step_default_vs_pgd10', _stepper(model, _default_generator(), x, y), pgd, '<= 1.0',
                  lambda r: r <= 1.0)]
    out.append(_ratio('  info: natural step vs pgd10', _stepper(model, None, x, y), pgd))
    out.append(_ratio('  info: all classes, whole batch every iteration (reference) vs pgd10',
                      _stepper(model, _default_generator(candidates=None, drop_crossed=False), x, y), pgd))
    out.append(_ratio('  info: all classes, crossed samples dropped vs pgd10',
                      _stepper(model, _default_generator(candidates=None), x, y), pgd))
    return out


def _lever_lines(model: nn.Module, x, y) -> List[Dict]:
    """Each lever as the step with it over the step without it (or over FGSM-RS), side by side."""
    default = _stepper(model, _default_generator(), x, y)
    fgsm_rs = _stepper(model, UniformGenerator('fgsm', eps=0.1), x, y)
    c3s5, c2s5 = (_stepper(model, _default_generator(candidates=c, attack_steps=5), x, y) for c in (3, 2))
    return [
        _ratio('  info: natural step vs FGSM-RS step', _stepper(model, None, x, y), fgsm_rs),
        _ratio('  info: previous default (DeepFool-5, top-3 candidates) vs FGSM-RS step', c3s5, fgsm_rs),
        _ratio('  info: lever one backward per DeepFool iteration: candidates 2 vs 3 (DeepFool-5)', c2s5, c3s5),
        _ratio('  info: lever at most 2 DeepFool iterations vs 5 (candidates 2)',
               _stepper(model, _default_generator(candidates=2, attack_steps=2), x, y), c2s5),
        _ratio('  info: lever warm start vs cold, default BAP (same batch every step: steady state, an upper '
               'bound; needs (x, y, index) batches)', _stepper(model, _default_generator(warm_start=True), x, y),
               default),
        _ratio('  info: lever fused clean+AE forward/backward vs two passes, default BAP (own loops only: NNI '
               'hands the pruner the clean loss already computed)',
               _stepper(model, _default_generator(), x, y, fused=True), default),
    ]


def _reuse_line(model: nn.Module, x, y) -> Dict:
    """The clean forward as DeepFool's first forward: ``x`` must require grad, so the clean backward also
    computes the input gradient; measured on the part of the step that changes."""
    model = copy.deepcopy(model).train()
    ce = nn.functional.cross_entropy

    def margin(logits):
        top = logits.detach().topk(2, dim=1).indices[:, 1:]
        return (logits.gather(1, top) - logits.gather(1, y[:, None])).sum()

    def separate():
        model.zero_grad()
        loss = ce(model(x), y)
        xa = x.clone().requires_grad_(True)
        torch.autograd.grad(margin(model(xa)), xa)
        loss.backward()

    def reused():
        model.zero_grad()
        xa = x.clone().requires_grad_(True)
        logits = model(xa)
        torch.autograd.grad(margin(logits), xa, retain_graph=True)
        ce(logits, y).backward()
    return _ratio('  info: lever clean forward reused for DeepFool\'s first gradient vs its own forward '
                  '(clean step + first gradient only)', reused, separate)


def _input_grad(model: nn.Module, x, onednn: bool) -> Callable[[], None]:
    def run():
        xa = x.clone().requires_grad_(True)
        logits = model(xa)
        with torch.backends.mkldnn.flags(enabled=onednn):
            torch.autograd.grad(logits[:, 0].sum(), xa)
    return run


def _onednn_lines(model: nn.Module, x) -> List[Dict]:
    model = copy.deepcopy(model).eval()
    torch.manual_seed(0)
    resnet = build_model('resnet_small', 3, 10, 32).eval()
    xr = torch.rand(64, 3, 32, 32)
    name = '  info: lever oneDNN off in the input-gradient backward vs on, {} (not kept: model-dependent)'
    return [_ratio(name.format('LeNet-5 b128'), _input_grad(model, x, False), _input_grad(model, x, True)),
            _ratio(name.format('resnet_small b64'), _input_grad(resnet, xr, False), _input_grad(resnet, xr, True))]


def _compile_line(model: nn.Module, x, y) -> Dict:
    if os.environ.get('BAP_BENCH_COMPILE') != '1':
        return info('lever torch.compile: not measured (BAP_BENCH_COMPILE=1 measures it; about a minute '
                    'to compile)')
    compiled = torch.compile(copy.deepcopy(model), dynamic=True)
    return _ratio('  info: lever torch.compile(dynamic=True) vs eager, default BAP step',
                  _stepper(compiled, _default_generator(), x, y), _stepper(model, _default_generator(), x, y))


def run(model: nn.Module, data) -> List[Dict]:
    x, y = data.x_train[:BATCH], data.y_train[:BATCH]
    fgsm_rs = _stepper(model, UniformGenerator('fgsm', eps=0.1), x, y)
    out = [_ratio('bap_step_vs_fgsm_rs_step', _stepper(model, _default_generator(), x, y), fgsm_rs,
                  f'<= {GOAL_FGSM_RS}', lambda r: r <= GOAL_FGSM_RS, reps=15)]
    out.append(info(f'BAP default: DeepFool-{DEFAULTS["attack_steps"]}, top-{DEFAULTS["candidates"]} candidates, '
                    f'crossed samples dropped; FGSM-RS eps 0.1, alpha 1.25 eps; batch {BATCH}, '
                    f'{torch.get_num_threads()} threads'))
    out += _lever_lines(model, x, y)
    out.append(_reuse_line(model, x, y))
    out += _onednn_lines(model, x)
    out.append(_compile_line(model, x, y))
    return out + _pgd_lines(model, x, y)


if __name__ == '__main__':
    from .common import data, trained_lenet
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
    d = data()
    run(trained_lenet(d), d)
