"""The package's structure: no import cycles, no upward imports, at most 10 modules at the root (issue 19).

Read from the source with the standard library's ``ast`` (nothing is imported), so a violation fails here before
it tangles the house.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / 'nni_bap'
#: Stages bottom to top: a module may import its own stage (within its own subpackage) and the stages below.
LAYERS = [('nni_bap.errors',), ('nni_bap.registry', 'nni_bap.utils'), ('nni_bap.attacks', 'nni_bap.data', 'nni_bap.models'),
          ('nni_bap.pruning', 'nni_bap.evaluation'), ('nni_bap.export',), ('nni_bap.deploy',),
          ('nni_bap.cli',)]


def _modules():
    out = {}
    for path in ROOT.rglob('*.py'):
        parts = list(path.relative_to(ROOT.parent).with_suffix('').parts)
        is_pkg = parts[-1] == '__init__'
        name = '.'.join(parts[:-1] if is_pkg else parts)
        out[name] = (path, is_pkg)
    return out


MODULES = _modules()


def _imports(name: str):
    """The package modules ``name`` imports (module level and inside functions), resolved to module names."""
    path, is_pkg = MODULES[name]
    package = name if is_pkg else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            candidates = [f'{target}.{a.name}' for a in node.names] + [target]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        for c in candidates:
            while c and c not in MODULES:
                c = c.rpartition('.')[0]
            if c and c != name and not name.startswith(c + '.') and c != 'nni_bap':
                found.add(c)
                break
    return found


GRAPH = {m: _imports(m) for m in MODULES}


def _cycle():
    """One import cycle among the package's modules (a list of names), or None."""
    state = {}

    def visit(m, stack):
        state[m] = 'open'
        for n in sorted(GRAPH[m]):
            if state.get(n) == 'open':
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n, stack + [n])
                if found:
                    return found
        state[m] = 'done'
        return None

    for m in sorted(GRAPH):
        if m not in state:
            found = visit(m, [m])
            if found:
                return found
    return None


def _layer(name: str) -> int:
    for i, stage in enumerate(LAYERS):
        if any(name == s or name.startswith(s + '.') for s in stage):
            return i
    return len(LAYERS)  # the package root (__init__, __main__) stands above everything


def _room(name: str) -> str:
    return '.'.join(name.split('.')[:2])


def test_no_import_cycle():
    assert _cycle() is None, ' -> '.join(_cycle())


def test_the_cycle_finder_finds_a_cycle(monkeypatch):
    """The check can fail: a made-up arrow from the bottom back to the top closes a cycle."""
    monkeypatch.setitem(GRAPH, 'nni_bap.errors', {'nni_bap.cli.main'})
    assert _cycle() is not None


def test_no_upward_or_sideways_import():
    """Utilities and errors at the bottom, then attacks / data / models, the method and evaluation, export, deployment
    plans (they measure exported layers), the CLI:
    an import goes down a stage, or stays in its own subpackage."""
    bad = [f'{m} -> {n}' for m, targets in GRAPH.items() for n in targets
           if _layer(n) > _layer(m) or (_layer(n) == _layer(m) and _room(n) != _room(m) and _layer(m) < len(LAYERS))]
    assert bad == []


@pytest.mark.parametrize('room', ['errors', 'utils', 'attacks', 'data', 'models', 'pruning', 'evaluation', 'export',
                                  'deploy', 'cli'])
def test_every_stage_has_its_room(room):
    assert f'nni_bap.{room}' in MODULES


def test_at_most_ten_modules_at_the_root():
    root = sorted(p.name for p in ROOT.glob('*.py'))
    assert len(root) <= 10, root


def test_runtime_stays_free_of_torch():
    """``nni_bap.export.runtime`` runs on a device with numpy and onnxruntime only."""
    seen, todo = set(), ['nni_bap.export.runtime']
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            parents = ['.'.join(m.split('.')[:i]) for i in range(1, m.count('.') + 1)]  # their __init__ run first
            todo += list(GRAPH[m]) + [p for p in parents if p in MODULES]
    for m in seen:
        tree = ast.parse(MODULES[m][0].read_text())
        heavy = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
                 if a.name.split('.')[0] in ('torch', 'nni')]
        heavy += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                  and n.module.split('.')[0] in ('torch', 'nni') and not n.level]
        assert heavy == [], (m, heavy)
