"""The registered models: forward passes, fx tracing (ModelSpeedup needs it), LeNet-5 size."""


import pytest
import torch

from nni_bap.models import MODELS, build_model

SHAPES = {'lenet5': (1, 28), 'digits_cnn': (1, 8), 'digits_bn': (1, 8), 'resnet_small': (3, 32)}


@pytest.mark.parametrize('name', sorted(MODELS))
def test_models_forward_and_trace(name):
    c, s = SHAPES[name]
    model = build_model(name, c, 10, s).eval()
    x = torch.rand(3, c, s, s)
    out = model(x)
    assert out.shape == (3, 10)
    gm = torch.fx.symbolic_trace(model)
    assert torch.allclose(gm(x), out)


def test_lenet5_size():
    n = sum(p.numel() for p in build_model('lenet5', 1, 10, 28).parameters())
    assert n == 61706
    with pytest.raises(ValueError, match='unknown model'):
        build_model('vgg', 1, 10, 28)
