"""Reference classifiers (inputs in [0, 1], logits out), each registered in :data:`MODELS`.

Every model is traceable by ``torch.fx.symbolic_trace`` (needed by NNI's ModelSpeedup).
"""
from .digits_bn import DigitsBN
from .digits_cnn import DigitsCNN
from .lenet5 import LeNet5
from .registry import MODELS, build_model
from .resnet_small import SmallResNet

__all__ = ['MODELS', 'DigitsBN', 'DigitsCNN', 'LeNet5', 'SmallResNet', 'build_model']
