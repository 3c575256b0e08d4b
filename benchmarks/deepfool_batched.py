"""Batched DeepFool vs a per-sample reference (torchattacks' DeepFool when importable, else a plain loop)."""
from __future__ import annotations

from typing import Dict, List

import torch

from nni_bap.attacks import DeepFool, flat_norm

from .common import line, paired

N = 256


def _plain_per_sample(model, x, y, steps=50, overshoot=0.02):
    """Textbook DeepFool, one sample and one class gradient at a time (all classes)."""
    out = []
    for i in range(len(x)):
        x0, label = x[i:i + 1], int(y[i])
        r_tot = torch.zeros_like(x0)
        xi = x0.clone()
        for _ in range(steps):
            xi = xi.detach().requires_grad_(True)
            logits = model(xi)[0]
            if int(logits.argmax()) != label:
                break
            g_y = torch.autograd.grad(logits[label], xi, retain_graph=True)[0]
            best, best_r = None, None
            for k in range(len(logits)):
                if k == label:
                    continue
                g_k = torch.autograd.grad(logits[k], xi, retain_graph=True)[0]
                w, f = g_k - g_y, float(logits[k] - logits[label])
                d = abs(f) / (float(w.norm()) + 1e-12)
                if best is None or d < best:
                    best, best_r = d, (abs(f) + 1e-4) / (float(w.norm()) ** 2 + 1e-12) * w
            r_tot = r_tot + best_r
            xi = (x0 + (1 + overshoot) * r_tot).clamp(0, 1)
        out.append(xi.detach())
    return torch.cat(out)


def reference():
    try:
        import torchattacks
        return 'torchattacks.DeepFool', lambda m, x, y: torchattacks.DeepFool(m, steps=50, overshoot=0.02)(x, y)
    except Exception:  # not installed or broken beside this torch
        return 'plain per-sample DeepFool', _plain_per_sample


def run(model, data) -> List[Dict]:
    x, y = data.x_test[:N], data.y_test[:N]
    name, ref = reference()
    ours = DeepFool(model, steps=50, overshoot=0.02)
    holder = {}
    run_ours = lambda: holder.__setitem__('ours', ours.attack(x, y).x_adv)
    run_ours()  # warm-up; the reference takes about a minute, so it runs once, between runs of ours
    a1, b = paired(run_ours, lambda: holder.__setitem__('ref', ref(model, x, y)), reps=1, warmup=0)
    a2, _ = paired(run_ours, lambda: None, reps=3, warmup=0)
    a = sorted([a1, a2, a2])[1]
    n_ours = float(flat_norm(holder['ours'] - x, 'l2').median())
    n_ref = float(flat_norm(holder['ref'] - x, 'l2').median())
    rel = abs(n_ours - n_ref) / n_ref
    out = [line(f'deepfool_batched_vs_{name.split(".")[0].split()[0]}_speedup', b / a, b, a, '>= 20', b / a >= 20)]
    text = (f'  info: median L2 norm ours {n_ours:.4f}, {name} {n_ref:.4f}: differ by {100 * rel:.1f}% '
            f'goal <= 5% {"ok" if rel <= 0.05 else "MISS"}')
    print(text, flush=True)
    out.append({'name': 'deepfool_norm_agreement', 'ratio': rel, 'ok': rel <= 0.05, 'text': text})
    return out
