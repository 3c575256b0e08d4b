"""Run configurations: read from YAML or JSON, validated once into a frozen, typed :class:`RunConfig`.

Everything below the command line receives a :class:`RunConfig`, never the raw mapping. Every name it accepts
comes from a registry (models, datasets, methods, base pruners, schedules, attacks of the ``eval`` spec) and
every method setting's default from the method's generator constructor (:mod:`nni_bap.pruning.generators`).
Imports neither NNI nor the pruners, so a config is checked before any work starts.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import yaml

from ..data import DATASETS
from ..deploy.block import resolve_align
from ..errors import BRIEF_CHARS, ConfigError, brief
from ..evaluation.spec import NAMED_SPECS, EvalSpec, validate_spec
from ..models import MODELS
from ..pruning.methods import (
    BASE_PRUNERS,
    METHODS,
    SCHEDULES,
    check_method_settings,
    parse_method,
)
from ..utils.atomic import sha256_json
from ..utils.device import DEVICE_PATTERN

__all__ = ['DEFAULT_CONFIG_LIST', 'MAX_CONFIG_BYTES', 'MAX_COUNT', 'MAX_SEED', 'MAX_YAML_NODES', 'PLACEMENT_KEYS',
           'RunConfig', 'config_keys', 'load_config', 'parse_process']

#: Pruning entries when a config gives none: every conv and linear layer to 0.8.
DEFAULT_CONFIG_LIST = ({'op_types': ['Conv2d', 'Linear'], 'sparse_ratio': 0.8},)
#: Keys that say where a run computes, not what it computes: left out of :meth:`RunConfig.config_hash`.
PLACEMENT_KEYS = ('device',)


def _families() -> List[str]:
    """The method families whose settings a config gives in a section of their own name (``bap: {...}``)."""
    return [e.name for e in METHODS.entries() if e.obj is not None and 'family' not in e.meta]


@dataclass(frozen=True)
class RunConfig:
    """One run's configuration, validated at construction (every field; a :class:`ConfigError` names the first
    problem). Build it with :meth:`from_dict`; derive others with :meth:`replace` or :meth:`with_sparsity`.

    Attributes
    ----------
    model, dataset, base_pruner, schedule
        Registered names (:data:`~nni_bap.models.MODELS`, :data:`~nni_bap.data.DATASETS`,
        :data:`~nni_bap.pruning.registry.BASE_PRUNERS`, :data:`~nni_bap.pruning.registry.SCHEDULES`).
    data_dir
        The dataset's folder (absolute) for file-based datasets.
    method
        A method name (:func:`~nni_bap.pruning.methods.parse_method`: ``'bap'``, ``'adversarial-pgd0.1'``...).
    config_list
        NNI's config list, as is (``exclude: true`` entries included); at least one pruning entry.
    sections
        Each method family's settings (``{'bap': {...}, 'adversarial': {...}}``), checked against the family's
        generator; :attr:`method_args` are the settings of :attr:`method`.
    eval
        The evaluation spec (:class:`~nni_bap.evaluation.spec.EvalSpec`), the name of one
        (:data:`~nni_bap.evaluation.spec.NAMED_SPECS`: ``'worst-case'``, ``'key-points'``; sized for the data's
        inputs when the run starts), or ``None`` for the default (``'worst-case'``).
    device
        ``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'``: the syntax is checked here, availability where the run
        starts (:func:`~nni_bap.utils.device.resolve_device`).
    align
        Channel pruners keep a multiple of this many channels per layer (:mod:`nni_bap.pruning.align`); ``'auto'``
        (the default) is onnxruntime's channel block on this CPU (16 with AVX-512F, else 8), resolved here, so the
        effective config records the width used; 1 turns alignment off. Ignored by unstructured pruners.
    """

    model: str = 'digits_cnn'
    dataset: str = 'digits'
    data_dir: Optional[str] = None
    method: str = 'bap'
    base_pruner: str = 'level'
    config_list: Tuple[Mapping[str, Any], ...] = DEFAULT_CONFIG_LIST
    schedule: str = 'agp'
    total_times: int = 10
    schedule_fraction: float = 0.7
    dense_epochs: int = 15
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.001
    seed: int = 0
    train_limit: Optional[int] = None
    test_limit: Optional[int] = None
    eval: Union[EvalSpec, str, None] = None
    device: str = 'auto'
    align: Any = 'auto'
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: The family of :attr:`method` and its settings (section, then what the name says), set at validation.
    family: str = field(init=False, repr=False, compare=False)
    method_args: Mapping[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        for key, registry in (('model', MODELS), ('dataset', DATASETS), ('base_pruner', BASE_PRUNERS),
                              ('schedule', SCHEDULES)):
            if not isinstance(getattr(self, key), str) or getattr(self, key) not in registry:
                raise ConfigError(f'unknown {key} {brief(getattr(self, key))}; choose one of {registry.names()}')
        _check_numbers(self)
        _check_data_dir(self)
        object.__setattr__(self, 'config_list', _check_config_list(self.config_list))
        object.__setattr__(self, 'sections', _check_sections(self.sections))
        family, args = parse_method(self.method, self.sections)
        object.__setattr__(self, 'family', family)
        object.__setattr__(self, 'method_args', args)
        check_method_settings(family, args)
        if isinstance(self.eval, str):
            if self.eval not in NAMED_SPECS:
                raise ConfigError(f'unknown evaluation spec {brief(self.eval)}; choose one of {sorted(NAMED_SPECS)} or '
                                  'give a mapping of norms')
        elif self.eval is not None:
            object.__setattr__(self, 'eval', validate_spec(self.eval))
        object.__setattr__(self, 'align', resolve_align(self.align))
        if not isinstance(self.device, str) or not DEVICE_PATTERN.match(self.device):
            raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {brief(self.device)}")

    @classmethod
    def from_dict(cls, raw: Any, base_dir: Optional[Path] = None) -> 'RunConfig':
        """Validate a config mapping (a file's, or :meth:`to_dict`'s); a relative ``data_dir`` is looked up
        against ``base_dir`` (the config file's folder) when it does not exist as given."""
        if not isinstance(raw, dict):
            raise ConfigError('a config must be a mapping of settings')
        unknown = sorted(set(raw) - set(config_keys()), key=str)
        if unknown:
            raise ConfigError(f'unknown config key {brief(unknown[0])}; known keys: {", ".join(sorted(config_keys()))}')
        raw = copy.deepcopy(raw)
        sections = {f: raw.pop(f) for f in _families() if f in raw}
        if raw.get('data_dir') is not None and raw.get('dataset', 'digits') != 'digits':
            raw['data_dir'] = _resolve_dir(raw['data_dir'], base_dir)
        if 'config_list' in raw and isinstance(raw['config_list'], list):
            raw['config_list'] = tuple(raw['config_list'])
        return cls(**raw, sections=sections)

    def to_dict(self) -> Dict[str, Any]:
        """The configuration as a config file writes it (every key, defaults filled in)."""
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init
               and f.name not in ('sections', 'eval')}
        out['config_list'] = [dict(e) for e in out['config_list']]
        out['eval'] = self.eval.to_dict() if isinstance(self.eval, EvalSpec) else self.eval
        out.update({f: dict(self.sections.get(f, {})) for f in _families()})
        return out

    def replace(self, **changes) -> 'RunConfig':
        """A copy with ``changes``, validated again."""
        return dataclasses.replace(self, **changes)

    def with_sparsity(self, sparsity: float) -> 'RunConfig':
        """A copy whose every pruning config_list entry prunes to ``sparsity`` (exclude entries kept)."""
        if not 0 < sparsity < 1:
            raise ConfigError(f'sparsity must be in (0, 1), got {sparsity}')
        entries = tuple(dict(e) if e.get('exclude') is True else {**e, 'sparse_ratio': float(sparsity)}
                        for e in self.config_list)
        return self.replace(config_list=entries)

    @property
    def target_sparsity(self) -> float:
        """The sparsity a run is labelled with: the first pruning entry's ``sparse_ratio``."""
        return float(next(e['sparse_ratio'] for e in self.config_list if e.get('exclude') is not True))

    @property
    def structured(self) -> bool:
        """Whether the base pruner removes whole channels."""
        return bool(BASE_PRUNERS.entry(self.base_pruner).structured)

    def nni_config_list(self) -> List[Dict[str, Any]]:
        """A fresh, mutable copy of :attr:`config_list` (NNI's functions change what they are given)."""
        return [copy.deepcopy(dict(e)) for e in self.config_list]

    def config_hash(self) -> str:
        """Hash of everything that determines a pruned model (the ``eval`` spec is hashed with the report; the
        ``device`` is where it was computed, not what: a run moved to another device is still the same run)."""
        return sha256_json({k: v for k, v in self.to_dict().items() if k != 'eval' and k not in PLACEMENT_KEYS})


def config_keys() -> List[str]:
    """Every key a config may have: the fields of :class:`RunConfig` and one section per method family."""
    return [f.name for f in dataclasses.fields(RunConfig) if f.init and f.name != 'sections'] + _families()


def _resolve_dir(data_dir: Any, base_dir: Optional[Path]) -> Any:
    if not isinstance(data_dir, str):
        return data_dir
    d = Path(data_dir)
    if not d.is_absolute() and base_dir is not None and not d.exists():
        d = Path(base_dir) / d
    return str(d.resolve()) if d.is_dir() else data_dir


def _check_data_dir(cfg: RunConfig) -> None:
    if not DATASETS.entry(cfg.dataset).needs_dir:
        return
    if not cfg.data_dir or not isinstance(cfg.data_dir, str):
        raise ConfigError(f'dataset {cfg.dataset!r} needs data_dir')
    if not Path(cfg.data_dir).is_dir():
        raise ConfigError(f'data folder {cfg.data_dir} does not exist')


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: Largest value of a count setting (epochs, batch_size, total_times, limits): what a C int holds. The data bounds
#: batch_size and total_times further (:func:`nni_bap.cli.jobs.check_data_fit`).
MAX_COUNT = 2 ** 31 - 1
#: Largest seed: numpy's generators take seeds below 2^32.
MAX_SEED = 2 ** 32 - 1


def _check_numbers(cfg: RunConfig) -> None:
    for key in ('total_times', 'dense_epochs', 'epochs', 'batch_size'):
        v, low = getattr(cfg, key), (0 if key == 'dense_epochs' else 1)
        if not _is_int(v) or not low <= v <= MAX_COUNT:
            kind = 'a non-negative' if low == 0 else 'a positive'
            raise ConfigError(f'{key} must be {kind} integer (at most {MAX_COUNT}), got {brief(v)}')
    for key in ('train_limit', 'test_limit'):
        v = getattr(cfg, key)
        if v is not None and (not _is_int(v) or not 1 <= v <= MAX_COUNT):
            raise ConfigError(f'{key} must be a positive integer (at most {MAX_COUNT}) or null, got {brief(v)}')
    if not _is_int(cfg.seed) or not 0 <= cfg.seed <= MAX_SEED:
        raise ConfigError(f'seed must be a non-negative integer (at most 2^32 - 1 = {MAX_SEED}), got {brief(cfg.seed)}')
    lr = cfg.lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f'lr must be a positive finite number, got {brief(lr)}')
    frac = cfg.schedule_fraction
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac <= 1:
        raise ConfigError(f'schedule_fraction must be in (0, 1], got {brief(frac)}')


def _check_config_list(config_list: Any) -> Tuple[Mapping[str, Any], ...]:
    if not isinstance(config_list, (list, tuple)) or not config_list:
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
            raise ConfigError(f'config_list[{i}].sparse_ratio must be a number in (0, 1), got {brief(r)}')
        pruned += 1
    if not pruned:
        raise ConfigError('config_list has only exclude entries: nothing would be pruned')
    return tuple(copy.deepcopy(dict(e)) for e in config_list)


def _check_sections(sections: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    """Every family's section is a mapping of settings its generator accepts (each family checked, used or not)."""
    out = {}
    for family in _families():
        section = sections.get(family) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{family} must be a mapping of that method's settings, got {brief(section)}")
        check_method_settings(family, section)
        out[family] = copy.deepcopy(section)
    return out


def parse_process(process: str, default_fraction: float) -> Tuple[str, float]:
    """``'agp'`` or ``'agp@0.3'`` (schedule, and the fraction of training it spans) -> (schedule, fraction)."""
    schedule, _, frac = str(process).partition('@')
    if schedule not in SCHEDULES:
        raise ConfigError(f'unknown schedule {brief(schedule)} in {brief(process)}; choose one of {SCHEDULES.names()}')
    try:
        fraction = float(frac) if frac else float(default_fraction)
    except ValueError:
        raise ConfigError(f'cannot read the fraction of {brief(process)} (expected e.g. agp@0.3)') from None
    if not 0 < fraction <= 1:
        raise ConfigError(f'schedule fraction of {brief(process)} must be in (0, 1]')
    return schedule, fraction


#: Largest config file read (a config is a few hundred bytes).
MAX_CONFIG_BYTES = 1 << 20
#: Most YAML nodes a config may expand to, aliases counted at every use (a 500-byte alias bomb expands to 10^9).
MAX_YAML_NODES = 100_000


def load_config(path: str) -> Dict[str, Any]:
    """Read a YAML or JSON file; errors name the file, and the line and column where parsing failed.

    Bounded work for a hostile file: at most :data:`MAX_CONFIG_BYTES` read, YAML aliases expanded to at most
    :data:`MAX_YAML_NODES` nodes (counted before anything is built), nesting bounded by Python's recursion limit;
    a key given twice is refused (YAML and JSON would silently keep the last).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f'config file {p} does not exist')
    try:
        with open(p, 'rb') as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        text = raw.decode('utf-8')
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f'{p}: cannot read: {exc}') from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f'{p}: larger than {MAX_CONFIG_BYTES} bytes; a config is a short list of settings')
    try:
        data = json.loads(text, object_pairs_hook=_json_object) if p.suffix == '.json' else _yaml(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f'{p} line {exc.lineno}, column {exc.colno}: {exc.msg}') from None
    except ConfigError as exc:
        raise ConfigError(f'{p}{"" if str(exc).startswith(":") else " "}{exc}') from None
    except RecursionError:
        raise ConfigError(f'{p}: nested too deeply') from None
    if not isinstance(data, dict):
        raise ConfigError(f'{p}: the top level must be a mapping of settings')
    return data


def _json_object(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise ConfigError(f': duplicate key {brief(key)}')
        seen.add(key)
    return dict(pairs)


def _children(node) -> List[Any]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_expansion(root, limit: int = MAX_YAML_NODES) -> None:
    """:class:`ConfigError` when the node graph, every alias expanded, has more than ``limit`` nodes or a cycle
    (counted over the shared graph, without expanding it)."""
    sizes: Dict[int, int] = {}
    path: set = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in _children(node))
            if sizes[id(node)] > limit:
                raise ConfigError(f': its aliases expand to more than {limit} values (an alias bomb?); refused')
            continue
        if id(node) in sizes:
            continue
        if id(node) in path:
            raise ConfigError(': an alias refers to the value that holds it (a cycle); refused')
        path.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)


def _loader():
    """PyYAML's safe loader, also reading ``1e-3`` and ``1.0e30`` as numbers (YAML 1.2; 1.1 wants ``1.0e-3``),
    refusing duplicate keys and alias bombs (:func:`_check_expansion`) before anything is built."""
    class Loader(yaml.SafeLoader):
        def construct_document(self, node):
            _check_expansion(node)
            return super().construct_document(node)

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != 'tag:yaml.org,2002:merge':
                    if (key.tag, key.value) in seen:
                        raise ConfigError(f'line {key.start_mark.line + 1}, column {key.start_mark.column + 1}: '
                                          f'duplicate key {brief(key.value)}')
                    seen.add((key.tag, key.value))
            return super().construct_mapping(node, deep)
    Loader.add_implicit_resolver('tag:yaml.org,2002:float', _FLOAT, list('-+0123456789.'))
    return Loader


_FLOAT = re.compile(r'^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$')


def _yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_loader())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f'line {mark.line + 1}, column {mark.column + 1}' if mark else 'somewhere'
        raise ConfigError(f'{where}: {str(exc.problem or exc.context)[:BRIEF_CHARS]}') from None
    except yaml.YAMLError as exc:
        raise ConfigError(f': cannot parse: {(str(exc).splitlines() or [""])[0][:BRIEF_CHARS]}') from None
