"""Inputs several test files share: closed-form linear classifiers and normalised (out-of-range) digit batches."""
import math

import torch
from torch import nn
from torch.nn import functional as F

from nni_bap.models import build_model

#: The one line an attack prints for inputs outside its [clip_min, clip_max] range (here normalised digits).
RANGE_MESSAGE = (r"inputs lie in \[-2\.5, 2\.5\], outside the attack's valid range \[0, 1\]; put normalisation "
                 r'inside the model \(e\.g\. a first layer that normalises\) or set clip_min/clip_max')


def linear(seed=0, d=20, k=5, n=64):
    """A random linear classifier (float64) and ``n`` inputs labelled by its own predictions."""
    torch.manual_seed(seed)
    model = nn.Linear(d, k).double()
    x = torch.randn(n, d, dtype=torch.double)
    return model, x, model(x).argmax(1)


def distances(model, x, y, dual):
    """Per sample and class, the exact distance to the boundary with that class (inf for the label)."""
    w, b = model.weight.detach(), model.bias.detach()
    f = x @ w.T + b
    margins = (f - f.gather(1, y[:, None])).abs()
    wdiff = (w[None, :, :] - w[y][:, None, :]).norm(p=dual, dim=2)
    return (margins / wdiff).masked_fill(F.one_hot(y, w.shape[0]).bool(), math.inf)


def digits_net():
    """An untrained digits CNN in eval mode (seeded)."""
    torch.manual_seed(0)
    return build_model('digits_cnn', 1, 10, 8).eval()


def normalised(digits, n=32):
    """``n`` training digits normalised by mean 0.5 and std 0.2: a batch spanning exactly [-2.5, 2.5]."""
    x = digits.x_train[:n].clone()
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0.0, 1.0
    return (x - 0.5) / 0.2, digits.y_train[:n]
