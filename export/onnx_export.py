"""Export a pruned run (``bap prune`` output) to verified ONNX: speed-up, conversion, validation.

    python export/onnx_export.py RUN_DIR
"""
import sys

from nni_bap.cli.main import main

if __name__ == '__main__':
    sys.exit(main(['export', *sys.argv[1:]]))
