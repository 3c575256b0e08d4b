"""The API reference builds from the docstrings (``make docs``, docs/build_api.py) and documents what a user needs."""
import html
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _text(page: Path) -> str:
    return html.unescape(re.sub(r'<[^>]+>', ' ', page.read_text()))


def test_api_reference_builds(tmp_path):
    out = tmp_path / 'api'
    proc = subprocess.run([sys.executable, str(ROOT / 'docs' / 'build_api.py'), str(out)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == '' and proc.stdout.strip() == str(out / 'index.html')
    pages = {p.relative_to(out).as_posix() for p in out.rglob('*.html')}
    assert {'nni_bap.html', 'nni_bap/pruning/pruner.html', 'nni_bap/export/onnx_export.html',
            'nni_bap/export/quantize.html', 'nni_bap/export/runtime.html', 'nni_bap/evaluation/robustness.html',
            'nni_bap/pruning/channel_mask.html'} <= pages
    assert not any('__main__' in p for p in pages)  # importing those would run the command line
    export = _text(out / 'nni_bap/export/onnx_export.html')
    for words in ('max_bn_drift', 'MasksNeededError', 'BatchNormDriftError', 'dummy_input', 'Returns'):
        assert words in export, words
    assert 'progress' in _text(out / 'nni_bap/pruning/pruner.html')
    assert 'min_agreement' in _text(out / 'nni_bap/export/quantize.html')
    assert 'BAPPruner' in _text(out / 'nni_bap.html')  # the lazily imported top-level names are resolved
