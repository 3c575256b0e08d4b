import os
from pathlib import Path

import pytest
import torch

from nni_bap.data import load_digits
from nni_bap.models import build_model
from nni_bap.pruning.training import train

MNIST_DIR = Path(os.environ.get('BAP_MNIST_DIR', Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data' / 'mnist'))


@pytest.fixture(scope='session')
def digits():
    return load_digits()


@pytest.fixture(scope='session')
def dense_digits(digits):
    """A DigitsCNN trained for a few epochs on digits (about 90% test accuracy)."""
    torch.manual_seed(0)
    model = build_model('digits_cnn', 1, 10, 8)
    train(model, digits.train_set(), epochs=12, progress=False)
    model.eval()
    return model


@pytest.fixture(scope='session')
def mnist_dir():
    if not (MNIST_DIR / 't10k-images-idx3-ubyte.gz').exists():
        pytest.skip(f'MNIST not found at {MNIST_DIR}')
    return MNIST_DIR


@pytest.fixture(scope='session')
def mnist_lenet(mnist_dir):
    """A LeNet-5 trained 2 epochs on MNIST images 0-7999, and test images 8000-8199 (x, y)."""
    from nni_bap.data import load_mnist
    from nni_bap.models import build_model
    from nni_bap.pruning.training import train
    data = load_mnist(str(mnist_dir))
    torch.manual_seed(0)
    model = build_model('lenet5', 1, 10, 28)
    train(model, data.train_set(), epochs=2, progress=False)
    model.eval()
    return model, data.x_test[:200], data.y_test[:200]
