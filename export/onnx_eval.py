"""Evaluate an exported model with onnxruntime only (numpy + onnxruntime; no torch, no NNI needed).

    python export/onnx_eval.py MODEL.onnx [--npz ADV.npz] [--data DATA.npz] [--threads N]

``--data`` and ``--npz`` take arrays ``x`` (float32, NCHW, in [0, 1]) and ``y`` (labels).
Prints clean accuracy, accuracy on the adversarial inputs and latency at batch 1 and 64.
"""
import argparse
import json
import sys

from nni_bap.export.runtime import OnnxClassifier, load_npz


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('model')
    p.add_argument('--data', help='clean evaluation data (.npz with x, y)')
    p.add_argument('--npz', help='adversarial inputs crafted on the torch model (.npz with x, y)')
    p.add_argument('--threads', type=int, default=0)
    args = p.parse_args(argv)
    clf = OnnxClassifier(args.model, threads=args.threads)
    out = {'model': args.model, 'input_shape': list(clf.input_shape)}
    x = None
    if args.data:
        data = load_npz(args.data)
        x = data['x']
        out['clean_accuracy'] = clf.accuracy(data['x'], data['y'])
    if args.npz:
        out['adversarial_accuracy'] = clf.accuracy_npz(args.npz)
    for b in (1, 64):
        sample = x[:b] if x is not None and len(x) >= b else None
        out[f'latency_batch_{b}'] = clf.latency(batch_size=b, x=sample)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
