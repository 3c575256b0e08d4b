"""Run configurations (YAML or JSON): defaults, method specs and validation that fails in one clear line."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Dict, Tuple

from .data import DATASETS
from .methods import BASE_PRUNERS, METHODS
from .models import MODELS
from .schedule import SCHEDULES

__all__ = ['ConfigError', 'DEFAULTS', 'load_config', 'parse_method', 'validate_config', 'with_sparsity']


class ConfigError(ValueError):
    """A configuration problem, stated in one line."""


#: Every accepted key with its default. ``config_list`` is NNI's, as is.
DEFAULTS: Dict[str, Any] = {
    'model': 'digits_cnn',
    'dataset': 'digits',
    'data_dir': None,
    'method': 'bap',
    'method_args': {},
    'base_pruner': 'level',
    'config_list': [{'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.8}],
    'schedule': 'agp',
    'total_times': 10,
    'schedule_fraction': 0.7,
    'dense_epochs': 15,
    'epochs': 10,
    'batch_size': 64,
    'lr': 0.001,
    'seed': 0,
    'train_limit': None,
    'test_limit': None,
    'eval': None,
    'adversarial': {'attack': 'fgsm', 'eps': 0.1},
    'bap': {},
}

_SUFFIX = re.compile(r'^(fgsm|pgd|pgd_l2)([0-9.]+)$|^s([0-9.]+)$|^c([0-9.]+|adaptive)$')


def parse_method(spec: str, cfg: Dict[str, Any] | None = None) -> Tuple[str, Dict[str, Any]]:
    """``'bap'``, ``'adversarial-fgsm0.3'``, ``'adversarial-pgd0.1'``, ``'bap-s1.1'`` (scale), ``'bap-c0.5'``
    (cutoff) -> (family, pruner settings). Settings start from the config's section of that family."""
    family, _, rest = spec.partition('-')
    if family not in METHODS:
        raise ConfigError(f'unknown method {spec!r}; choose one of {sorted(METHODS)} (optionally with a suffix)')
    args: Dict[str, Any] = dict((cfg or {}).get(family) or {}) if family != 'natural' else {}
    for part in filter(None, [rest]):
        m = _SUFFIX.match(part)
        if family == 'natural' or not m:
            raise ConfigError(f'cannot read method suffix {part!r} of {spec!r}')
        if m.group(1):
            if family != 'adversarial':
                raise ConfigError(f'{spec!r}: an attack suffix belongs to adversarial')
            args.update(attack=m.group(1), eps=float(m.group(2)))
        elif m.group(3):
            args['scale'] = float(m.group(3))
        else:
            args['cutoff'] = m.group(4) if m.group(4) == 'adaptive' else float(m.group(4))
    return family, args


def load_config(path: str) -> Dict[str, Any]:
    """Read a YAML or JSON file (errors name the file)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f'config file {p} does not exist')
    text = p.read_text()
    try:
        if p.suffix == '.json':
            data = json.loads(text)
        else:
            import yaml
            data = yaml.safe_load(text)
    except Exception as exc:
        raise ConfigError(f'{p}: cannot parse: {exc}'.splitlines()[0]) from exc
    if not isinstance(data, dict):
        raise ConfigError(f'{p}: the top level must be a mapping of settings')
    return data


def validate_config(raw: Dict[str, Any], base_dir: Path | None = None) -> Dict[str, Any]:
    """Fill defaults and check every setting before any work starts."""
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f'unknown config key {unknown[0]!r}; known keys: {", ".join(sorted(DEFAULTS))}')
    cfg = copy.deepcopy(DEFAULTS)
    cfg.update(copy.deepcopy(raw))
    if cfg['model'] not in MODELS:
        raise ConfigError(f'unknown model {cfg["model"]!r}; choose one of {sorted(MODELS)}')
    if cfg['dataset'] not in DATASETS:
        raise ConfigError(f'unknown dataset {cfg["dataset"]!r}; choose one of {sorted(DATASETS)}')
    if cfg['dataset'] != 'digits':
        if not cfg['data_dir']:
            raise ConfigError(f'dataset {cfg["dataset"]!r} needs data_dir')
        d = Path(cfg['data_dir'])
        if not d.is_absolute() and base_dir is not None and not d.exists():
            d = base_dir / d
        if not d.is_dir():
            raise ConfigError(f'data folder {cfg["data_dir"]} does not exist')
        cfg['data_dir'] = str(d.resolve())
    if cfg['base_pruner'] not in BASE_PRUNERS:
        raise ConfigError(f'unknown base_pruner {cfg["base_pruner"]!r}; choose one of {sorted(BASE_PRUNERS)}')
    if cfg['schedule'] not in SCHEDULES:
        raise ConfigError(f'unknown schedule {cfg["schedule"]!r}; choose one of {sorted(SCHEDULES)}')
    parse_method(cfg['method'], cfg)
    if not isinstance(cfg['config_list'], list) or not cfg['config_list']:
        raise ConfigError('config_list must be a non-empty list of NNI config dicts')
    for i, entry in enumerate(cfg['config_list']):
        if not isinstance(entry, dict):
            raise ConfigError(f'config_list[{i}] must be a mapping')
        r = entry.get('sparse_ratio')
        if r is None or not isinstance(r, (int, float)) or not 0 < r < 1:
            raise ConfigError(f'config_list[{i}].sparse_ratio must be a number in (0, 1), got {r!r}')
    for key in ('total_times', 'dense_epochs', 'epochs', 'batch_size'):
        if not isinstance(cfg[key], int) or cfg[key] < (0 if key == 'dense_epochs' else 1):
            raise ConfigError(f'{key} must be a positive integer, got {cfg[key]!r}')
    if not 0 < float(cfg['schedule_fraction']) <= 1:
        raise ConfigError(f'schedule_fraction must be in (0, 1], got {cfg["schedule_fraction"]!r}')
    return cfg


def with_sparsity(cfg: Dict[str, Any], sparsity: float) -> Dict[str, Any]:
    """A copy of ``cfg`` whose every config_list entry prunes to ``sparsity``."""
    if not 0 < sparsity < 1:
        raise ConfigError(f'sparsity must be in (0, 1), got {sparsity}')
    out = copy.deepcopy(cfg)
    for entry in out['config_list']:
        entry['sparse_ratio'] = float(sparsity)
    return out
