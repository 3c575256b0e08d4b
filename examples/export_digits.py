"""Channel pruning with BAP, then deployment: ONNX export, int8, onnxruntime evaluation (about a minute on 2 cores).

    python examples/export_digits.py [OUT_DIR]

The Python-API counterpart of ``bap prune`` + ``bap export --int8`` + ``bap eval``, on sklearn's digits:

1. train the demo's BatchNorm CNN, prune half of every conv's channels (L1 norms) with BAP: ``BAPPruner`` masks the
   BatchNorm channels after removed ones while it trains, so the exported model is the one it validated;
2. ``export_onnx``: NNI ModelSpeedup shrinks the layers, the ONNX file is checked and validated against torch, and
   ``bn_drift`` (how far removing channels moves the logits) must be 0 - a drifting model is refused;
3. ``quantize_int8``: static int8, validated against fp32 (argmax agreement >= 99%, accuracy within 1 point) or refused;
4. ``OnnxClassifier`` (numpy + onnxruntime only, what a deployment machine needs): accuracy and latency of both files,
   and the worst-case robustness evaluation re-classified by onnxruntime next to torch.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import nni
import torch
from torch.utils.data import DataLoader

from nni_bap import BAPPruner, finalize  # first: nni_bap imports NNI with its import-time warnings silenced
from nni.compression.pruning import L1NormPruner  # noqa: E402  (after nni_bap on purpose)
from nni.compression.utils import TorchEvaluator  # noqa: E402
from nni_bap.data import load_digits  # noqa: E402
from nni_bap.evaluation.robustness import evaluate_robustness  # noqa: E402
from nni_bap.export import OnnxClassifier, export_onnx, quantize_int8  # noqa: E402
from nni_bap.models import DigitsBN  # noqa: E402
from nni_bap.pruning.dependency import structured_dependency_config  # noqa: E402
from nni_bap.pruning.training import accuracy, train  # noqa: E402

logging.basicConfig(level=logging.INFO, format='%(message)s')
log = logging.getLogger('export_digits')


def training_func_for(loader: DataLoader):
    """NNI's training-function contract over ``loader``: train until ``max_steps`` (the pruner's schedule needs them)."""
    def training_func(model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        model.train()
        step = 0
        while step < max_steps:
            for batch in loader:
                optimizers.zero_grad()
                training_step(batch, model).backward()
                optimizers.step()
                step += 1
                if step == max_steps:
                    return
    return training_func


def training_step(batch, model):
    return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])


def prune(model, loader: DataLoader):
    """Half of the channels of every conv but the first, BAP schedule over 100 steps, 50 more to fine-tune."""
    config_list = structured_dependency_config(model, [{'op_types': ['Conv2d'], 'sparse_ratio': 0.5},
                                                       {'op_names': ['features.0'], 'exclude': True}])
    evaluator = TorchEvaluator(training_func_for(loader), nni.trace(torch.optim.Adam)(model.parameters(), lr=1e-3), training_step)
    pruner = L1NormPruner(model, config_list, evaluator=evaluator)  # the evaluator goes to the base pruner
    bap = BAPPruner(pruner, interval_steps=10, total_times=10, cutoff='adaptive', scale=1.0)
    _, masks = bap.compress(max_steps=150, max_epochs=None)  # a progress bar when run in a terminal
    return finalize(bap), masks  # masks baked into the weights, NNI wrappers removed


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = load_digits()
    x_test, y_test = data.x_test, data.y_test
    torch.manual_seed(0)
    dense = train(DigitsBN(), data.train_set(), epochs=20, progress=False)
    loader = DataLoader(data.train_set(), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    model, masks = prune(dense, loader)
    log.info('dense %.4f, pruned %.4f (torch)', accuracy(dense, x_test, y_test), accuracy(model, x_test, y_test))

    fp32 = export_onnx(model, str(out / 'model.onnx'), x_test[:8], masks=masks, validation_inputs=x_test)
    e = fp32.efficiency
    log.info('model.onnx: %d params, %.2f MFLOPs, %d bytes; bn_drift %g, max |ORT - torch| %.1e', e['params'],
             e['flops'] / 1e6, e['file_bytes'], fp32.bn_drift, fp32.onnx_max_abs_diff)
    int8 = quantize_int8(str(out / 'model.onnx'), str(out / 'model.int8.onnx'), data.x_train[:512].numpy(),
                         x_test.numpy(), y_test.numpy(), target_cpu='no-vnni')  # same results on every x86 CPU
    log.info('model.int8.onnx: agreement with fp32 %.4f, accuracy %.4f (fp32 %.4f), %d bytes', int8.agreement,
             int8.int8_accuracy, int8.fp32_accuracy, int8.int8_bytes)

    for name in ('model.onnx', 'model.int8.onnx'):  # what runs on the deployment machine: numpy + onnxruntime
        clf = OnnxClassifier(str(out / name), threads=1)
        lat = clf.latency(batch_size=64, x=x_test[:64].numpy())
        log.info('%-16s accuracy %.4f, latency %.3f ms per batch of 64', name, clf.accuracy(x_test.numpy(),
                 y_test.numpy()), lat['median_ms'])
    rep = evaluate_robustness(fp32.model, x_test, y_test, progress=False,
                              classifiers={'onnx': OnnxClassifier(str(out / 'model.onnx'))})
    for norm, curve in rep['curves'].items():
        log.info('worst-case AUC %s: torch %.4f, onnxruntime %.4f', norm, curve['auc']['torch'], curve['auc']['onnx'])


if __name__ == '__main__':
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path('runs/export_digits'))
