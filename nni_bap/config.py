"""Run configurations (YAML or JSON): defaults, method and process specs, and validation that fails in one line.

Imports neither NNI nor the pruners, so a config is checked in a fraction of a second before any work.
"""
from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any, Dict, Tuple

from .errors import BapError
from .schedule import SCHEDULES

__all__ = ['BASE_PRUNER_NAMES', 'ConfigError', 'DEFAULTS', 'DEVICE_PATTERN', 'METHOD_NAMES', 'METHOD_SETTINGS',
           'PLACEMENT_KEYS', 'STRUCTURED', 'check_method_settings', 'config_hash', 'load_config', 'parse_method',
           'parse_process', 'target_sparsity', 'validate_config', 'with_sparsity']


class ConfigError(BapError, ValueError):
    """A configuration problem, stated in one line."""


#: Every accepted key with its default. ``config_list`` is NNI's, as is (``exclude: true`` entries included).
DEFAULTS: Dict[str, Any] = {
    'model': 'digits_cnn',
    'dataset': 'digits',
    'data_dir': None,
    'method': 'bap',
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
    'eval': None,  # None: nni_bap.eval_spec.default_spec for the data's input shape
    'device': 'auto',  # 'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'; not part of config_hash
    'adversarial': {'attack': 'fgsm', 'eps': 0.1},
    'bap': {},
}

#: Pruning method families (``nni_bap.methods.METHODS`` maps them to pruner classes).
METHOD_NAMES = ('natural', 'adversarial', 'bap')
#: Scoring pruners (``nni_bap.methods.BASE_PRUNERS`` maps them to NNI classes); the structured ones prune channels.
BASE_PRUNER_NAMES = ('level', 'l1', 'l2', 'fpgm')
STRUCTURED = ('l1', 'l2', 'fpgm')
#: Keyword settings each family's pruner takes from the config (the runner sets ``schedule`` itself).
METHOD_SETTINGS = {
    'natural': (),
    'adversarial': ('attack', 'eps', 'steps', 'alpha', 'random_start', 'adv_weight', 'clip_min', 'clip_max',
                    'log_interval'),
    'bap': ('cutoff', 'scale', 'attack_steps', 'overshoot', 'candidates', 'adv_weight', 'norm', 'clip_min',
            'clip_max', 'log_interval'),
}
#: Device names a config (or ``--device``) may give; whether CUDA is there is checked by :mod:`nni_bap.device`.
DEVICE_PATTERN = re.compile(r'^(auto|cpu|cuda(:[0-9]+)?)$')
#: Keys that say where a run computes, not what it computes: left out of :func:`config_hash`.
PLACEMENT_KEYS = ('device',)
_SUFFIX = re.compile(r'^(fgsm|pgd|pgd_l2)([0-9.]+)$|^s([0-9.]+)$|^c([0-9.]+|adaptive)$')


def parse_method(spec: str, cfg: Dict[str, Any] | None = None) -> Tuple[str, Dict[str, Any]]:
    """``'bap'``, ``'adversarial-fgsm0.3'``, ``'adversarial-pgd0.1'``, ``'bap-s1.1'`` (scale), ``'bap-c0.5'``
    (cutoff) -> (family, pruner settings). Settings start from the config's section of that family."""
    family, _, rest = str(spec).partition('-')
    if family not in METHOD_NAMES:
        raise ConfigError(f'unknown method {spec!r}; choose one of {sorted(METHOD_NAMES)} (optionally with a suffix)')
    args: Dict[str, Any] = dict((cfg or {}).get(family) or {}) if family != 'natural' else {}
    for part in filter(None, [rest]):
        m = _SUFFIX.match(part)
        if family == 'natural' or not m:
            raise ConfigError(f'cannot read method suffix {part!r} of {spec!r}')
        if m.group(1):
            if family != 'adversarial':
                raise ConfigError(f'{spec!r}: an attack suffix belongs to adversarial')
            args.update(attack=m.group(1), eps=_number(m.group(2), spec))
        elif m.group(3):
            args['scale'] = _number(m.group(3), spec)
        else:
            args['cutoff'] = m.group(4) if m.group(4) == 'adaptive' else _number(m.group(4), spec)
    return family, args


def _number(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f'cannot read the number {text!r} in {where!r}') from None


def parse_process(process: str, default_fraction: float) -> Tuple[str, float]:
    """``'agp'`` or ``'agp@0.3'`` (schedule, and the fraction of training it spans) -> (schedule, fraction)."""
    schedule, _, frac = str(process).partition('@')
    if schedule not in SCHEDULES:
        raise ConfigError(f'unknown schedule {schedule!r} in {process!r}; choose one of {sorted(SCHEDULES)}')
    try:
        fraction = float(frac) if frac else float(default_fraction)
    except ValueError:
        raise ConfigError(f'cannot read the fraction of {process!r} (expected e.g. agp@0.3)') from None
    if not 0 < fraction <= 1:
        raise ConfigError(f'schedule fraction of {process!r} must be in (0, 1]')
    return schedule, fraction


def load_config(path: str) -> Dict[str, Any]:
    """Read a YAML or JSON file; errors name the file, and the line and column where parsing failed."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f'config file {p} does not exist')
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f'{p}: cannot read: {exc}') from None
    try:
        data = json.loads(text) if p.suffix == '.json' else _yaml(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f'{p} line {exc.lineno}, column {exc.colno}: {exc.msg}') from None
    except ConfigError as exc:
        raise ConfigError(f'{p} {exc}') from None
    if not isinstance(data, dict):
        raise ConfigError(f'{p}: the top level must be a mapping of settings')
    return data


def _loader():
    """PyYAML's safe loader, also reading ``1e-3`` and ``1.0e30`` as numbers (YAML 1.2; 1.1 wants ``1.0e-3``)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass
    Loader.add_implicit_resolver('tag:yaml.org,2002:float', _FLOAT, list('-+0123456789.'))
    return Loader


_FLOAT = re.compile(r'^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$')


def _yaml(text: str) -> Any:
    import yaml
    try:
        return yaml.load(text, Loader=_loader())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f'line {mark.line + 1}, column {mark.column + 1}' if mark else 'somewhere'
        raise ConfigError(f'{where}: {exc.problem or exc.context}') from None
    except yaml.YAMLError as exc:
        raise ConfigError(f': cannot parse: {str(exc).splitlines()[0]}') from None


def validate_config(raw: Dict[str, Any], base_dir: Path | None = None) -> Dict[str, Any]:
    """Fill defaults and check every setting before any work starts; a stored config goes through here too."""
    if not isinstance(raw, dict):
        raise ConfigError('a config must be a mapping of settings')
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f'unknown config key {unknown[0]!r}; known keys: {", ".join(sorted(DEFAULTS))}')
    cfg = copy.deepcopy(DEFAULTS)
    cfg.update(copy.deepcopy(raw))
    _check_names(cfg)
    cfg['data_dir'] = _data_dir(cfg, base_dir)
    _check_numbers(cfg)
    _check_config_list(cfg['config_list'])
    family, args = parse_method(cfg['method'], cfg)
    for fam in ('adversarial', 'bap'):
        check_method_settings(fam, parse_method(fam, cfg)[1])
    check_method_settings(family, args)
    _check_eval(cfg['eval'])
    _check_device(cfg['device'])
    return cfg


def _check_device(device: Any) -> None:
    if not isinstance(device, str) or not DEVICE_PATTERN.match(device):
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def _check_names(cfg: Dict[str, Any]) -> None:
    from .data import DATASETS
    from .models import MODELS
    for key, table in (('model', MODELS), ('dataset', DATASETS), ('base_pruner', BASE_PRUNER_NAMES),
                       ('schedule', SCHEDULES)):
        if not isinstance(cfg[key], str) or cfg[key] not in table:
            raise ConfigError(f'unknown {key} {cfg[key]!r}; choose one of {sorted(table)}')
    for key in ('adversarial', 'bap'):
        if not isinstance(cfg[key] or {}, dict):
            raise ConfigError(f'{key} must be a mapping of that method\'s settings, got {cfg[key]!r}')


def _data_dir(cfg: Dict[str, Any], base_dir: Path | None):
    if cfg['dataset'] == 'digits':
        return cfg['data_dir']
    if not cfg['data_dir'] or not isinstance(cfg['data_dir'], str):
        raise ConfigError(f'dataset {cfg["dataset"]!r} needs data_dir')
    d = Path(cfg['data_dir'])
    if not d.is_absolute() and base_dir is not None and not d.exists():
        d = base_dir / d
    if not d.is_dir():
        raise ConfigError(f'data folder {cfg["data_dir"]} does not exist')
    return str(d.resolve())


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_numbers(cfg: Dict[str, Any]) -> None:
    for key in ('total_times', 'dense_epochs', 'epochs', 'batch_size'):
        if not _is_int(cfg[key]) or cfg[key] < (0 if key == 'dense_epochs' else 1):
            raise ConfigError(f'{key} must be a positive integer, got {cfg[key]!r}')
    for key in ('train_limit', 'test_limit'):
        if cfg[key] is not None and (not _is_int(cfg[key]) or cfg[key] < 1):
            raise ConfigError(f'{key} must be a positive integer or null, got {cfg[key]!r}')
    if not _is_int(cfg['seed']) or cfg['seed'] < 0:
        raise ConfigError(f'seed must be a non-negative integer, got {cfg["seed"]!r}')
    lr = cfg['lr']
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f'lr must be a positive finite number, got {lr!r}')
    frac = cfg['schedule_fraction']
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac <= 1:
        raise ConfigError(f'schedule_fraction must be in (0, 1], got {frac!r}')


def _check_config_list(config_list: Any) -> None:
    if not isinstance(config_list, list) or not config_list:
        raise ConfigError('config_list must be a non-empty list of NNI config dicts')
    pruned = 0
    for i, entry in enumerate(config_list):
        if not isinstance(entry, dict):
            raise ConfigError(f'config_list[{i}] must be a mapping')
        if entry.get('exclude') is True:
            if not any(entry.get(k) for k in ('op_names', 'op_types', 'op_names_re')):
                raise ConfigError(f'config_list[{i}] excludes nothing: give op_names, op_types or op_names_re')
            continue
        r = entry.get('sparse_ratio')
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r < 1:
            raise ConfigError(f'config_list[{i}].sparse_ratio must be a number in (0, 1), got {r!r}')
        pruned += 1
    if not pruned:
        raise ConfigError('config_list has only exclude entries: nothing would be pruned')


def check_method_settings(family: str, args: Dict[str, Any]) -> None:
    """Check a method's settings by building its AE generator (the pruner builds the same one); no NNI needed."""
    unknown = sorted(set(args) - set(METHOD_SETTINGS[family]))
    if unknown:
        raise ConfigError(f'unknown {family} setting {unknown[0]!r}; known: {", ".join(METHOD_SETTINGS[family])}')
    if family == 'natural':
        return
    a = dict(args)
    w = a.pop('adv_weight', 0.5)
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w <= 1:
        raise ConfigError(f'{family}: adv_weight must be in [0, 1], got {w!r}')
    a.pop('log_interval', None)
    from .attacks.base import check_count
    from .generators import BlindGenerator, UniformGenerator
    try:
        if family == 'bap':
            check_count('attack_steps', a.get('attack_steps', 5))
            BlindGenerator(**{('steps' if k == 'attack_steps' else k): v for k, v in a.items()})
        else:
            UniformGenerator(**a)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f'{family}: {exc}') from None


def _check_eval(spec: Any) -> None:
    if spec is None:
        return
    from .eval_spec import validate_spec
    try:
        validate_spec(spec)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def with_sparsity(cfg: Dict[str, Any], sparsity: float) -> Dict[str, Any]:
    """A copy of ``cfg`` whose every pruning config_list entry prunes to ``sparsity`` (exclude entries kept)."""
    if not 0 < sparsity < 1:
        raise ConfigError(f'sparsity must be in (0, 1), got {sparsity}')
    out = copy.deepcopy(cfg)
    for entry in out['config_list']:
        if entry.get('exclude') is not True:
            entry['sparse_ratio'] = float(sparsity)
    return out


def target_sparsity(cfg: Dict[str, Any]) -> float:
    """The sparsity a run is labelled with: the first pruning entry's ``sparse_ratio``."""
    return float(next(e['sparse_ratio'] for e in cfg['config_list'] if e.get('exclude') is not True))


def config_hash(cfg: Dict[str, Any]) -> str:
    """Hash of everything that determines a pruned model (the ``eval`` spec is hashed with the report; the
    ``device`` is where it was computed, not what: a run moved to another device is still the same run)."""
    from .atomic import sha256_json
    return sha256_json({k: v for k, v in cfg.items() if k != 'eval' and k not in PLACEMENT_KEYS})

