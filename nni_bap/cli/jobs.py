"""The jobs behind ``bap prune``, ``bap export`` and ``bap eval``; each reads and writes one run folder, holding its
lock (:meth:`~nni_bap.cli.run_folder.RunFolder.lock`) while it does."""
from __future__ import annotations

import contextlib
import logging
import math
import random
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..attacks import PGD
from ..attacks.base import check_inputs
from ..data import DataSplit, load_dataset
from ..deploy.block import block_width
from ..errors import ConfigError, CorruptModelError, DataError, RunFolderError
from ..evaluation.robustness import evaluate_robustness
from ..evaluation.spec import EvalSpec, default_spec, named_spec, validate_spec
from ..export.onnx_export import export_onnx
from ..export.quantize import craft_transfer_inputs, quantize_int8, robustness_recheck
from ..export.runtime import OnnxClassifier
from ..pruning.align import align_config_list
from ..pruning.checkpoint import CHECKPOINT
from ..pruning.compat import nni_config_list
from ..pruning.methods import check_method_settings
from ..pruning.prune import check_config_list, prune
from ..pruning.training import accuracy
from ..utils.atomic import atomic_write, check_no_symlink, sha256_file
from ..utils.device import resolve_device
from ..utils.distributed import barrier, is_main, world_size
from .config import RunConfig
from .dense import build, data_hash, dense_model
from .report import write_report
from .run_folder import RunFolder

__all__ = ['ONNX_MIN_AGREEMENT', 'check_data_fit', 'load_data', 'resolve_eval_target', 'run_eval', 'run_export',
           'run_prune', 'run_spec']

_logger = logging.getLogger(__name__)

#: ``bap eval``'s deployment check: PGD crafted on the torch model, saved, re-classified by onnxruntime.
TRANSFER = {'eps': 0.1, 'steps': 20, 'npz': 'adv_pgd0.1.npz'}
#: Training images that calibrate int8 activation ranges.
INT8_CALIBRATION = 512
#: The int8 robustness re-check: PGD (Linf) crafted on the fp32 torch model at these budgets, on this many images.
INT8_RECHECK = {'budgets': (0.05, 0.1, 0.2), 'steps': 20, 'samples': 500}
#: Least argmax agreement of an ONNX file with its torch model on the clean test set for ``bap eval`` to evaluate
#: it (fp32: the exporter checked 100%), and for an int8 file (the gate ``quantize_int8`` applied).
ONNX_MIN_AGREEMENT = {'fp32': 0.999, 'int8': 0.99}


def load_data(cfg: RunConfig) -> DataSplit:
    """The config's dataset, cut to ``train_limit`` / ``test_limit``, and checked against the config
    (:func:`check_data_fit`)."""
    data = load_dataset(cfg.dataset, cfg.data_dir).subset(cfg.train_limit, cfg.test_limit)
    check_data_fit(cfg, data)
    return data


def check_data_fit(cfg: RunConfig, data: DataSplit) -> None:
    """The settings that only the data can check, before any training: ``batch_size`` at most the training samples,
    ``total_times`` at most the training steps (more would stretch training past ``epochs``), the method's
    ``clip_min`` / ``clip_max`` around the data's range, and the model able to take the data's inputs.

    Raises
    ------
    ConfigError
        Naming the setting and what the data allows.
    """
    n = len(data.y_train)
    if n == 0 or cfg.batch_size > n:
        raise ConfigError(f'batch_size {cfg.batch_size} is larger than the {n} training samples of {cfg.dataset}; '
                          'lower batch_size (or raise train_limit)')
    batches = math.ceil(math.ceil(n / world_size()) / cfg.batch_size)
    if cfg.total_times > cfg.epochs * batches:
        raise ConfigError(f'total_times {cfg.total_times} is more than the {cfg.epochs * batches} training steps '
                          f'(epochs {cfg.epochs} x {batches} batches of {cfg.batch_size}): the schedule would stretch '
                          'training past epochs; lower total_times or raise epochs')
    settings = check_method_settings(cfg.family, cfg.method_args)
    if 'clip_min' in settings:
        try:
            for x in (data.x_train, data.x_test):
                check_inputs(x, settings['clip_min'], settings['clip_max'])
        except DataError as exc:
            raise ConfigError(f'{cfg.family}: clip_min / clip_max do not fit {cfg.dataset}: {exc}') from None
    try:
        with torch.no_grad():
            build(cfg, data).eval()(data.x_train[:1])
    except RuntimeError as exc:
        raise ConfigError(f'model {cfg.model} cannot take {cfg.dataset} inputs of shape {tuple(data.input_shape)}: '
                          f'{str(exc).splitlines()[0][:200]}') from None


def run_spec(cfg: RunConfig, input_shape, spec: Optional[EvalSpec] = None) -> EvalSpec:
    """The evaluation spec a run uses: ``spec``, else the config's ``eval`` (a spec, or a named one sized for inputs
    of ``input_shape``), else the default for those inputs."""
    if isinstance(cfg.eval, str) and spec is None:
        return validate_spec(named_spec(cfg.eval, tuple(input_shape)))
    return validate_spec(spec or cfg.eval or default_spec(tuple(input_shape)))


def _config_list(cfg: RunConfig, model: nn.Module) -> List[Dict]:
    """The config_list NNI gets: for a channel pruner one entry per layer, with dependency groups, widths aligned
    to multiples of ``cfg.align`` channels (:func:`~nni_bap.pruning.align.align_config_list`)."""
    if not cfg.structured:
        return cfg.nni_config_list()
    _logger.info('channel alignment: multiples of %d channels (align; onnxruntime block on this CPU: %d)',
                 cfg.align, block_width())
    return align_config_list(model, nni_config_list(cfg.nni_config_list()), cfg.align)


def _reusable(folder: RunFolder, cfg: RunConfig, digest: str) -> Optional[Dict]:
    """``run.json`` of a complete run of ``cfg`` on the data of ``digest`` in ``folder``, else ``None`` (and the log
    says why not)."""
    reason = folder.check_prune(cfg.config_hash(), digest)
    if reason is not None:
        if (folder / 'run.json').exists():
            _logger.info('%s: pruning redone (--resume): %s', folder.path, reason)
        return None
    _logger.info('%s: pruning already done for this config and data, reused (--resume)', folder.path)
    return folder.read_json('run.json')


def run_prune(cfg: RunConfig, out: Path, data: Optional[DataSplit] = None, dense: Optional[nn.Module] = None,
              progress: bool = True, cache: Optional[Path] = None, resume: bool = False,
              on_epoch_end: Optional[Callable[[int, int], None]] = None,
              device: Optional[torch.device] = None) -> Dict:
    """Prune according to ``cfg`` on ``device`` (default: the config's); write ``model.pt``, ``stats.json``,
    ``run.json`` into the run folder ``out``.

    Nothing is written when pruning fails (divergence, a config_list NNI rejects, a missed sparsity), except
    ``checkpoint.pt``: written at every epoch end, removed once the run is complete. With ``resume`` a complete
    run of ``cfg`` on the same data (content, not path) in ``out`` is returned as it is; otherwise pruning
    continues from ``checkpoint.pt`` when there is one (:mod:`nni_bap.pruning.checkpoint`). ``on_epoch_end(epochs
    done, steps done)`` is :func:`nni_bap.pruning.prune.prune`'s. In several processes (``torchrun``) only rank 0
    writes (and holds the folder's lock); every process returns the same information.
    """
    device = device if device is not None else resolve_device(cfg.device)
    folder = RunFolder(out)
    if is_main():
        folder.create()
    with folder.lock() if is_main() else contextlib.nullcontext():
        if cache is not None and is_main():  # the dense cache is written inside the run: never through a link
            check_no_symlink(folder.path, Path(cache))
        if data is None:
            data = load_data(cfg)
        else:
            check_data_fit(cfg, data)
        done = _reusable(folder, cfg, data_hash(data)) if resume else None
        return done if done is not None else _prune(cfg, folder, data, dense, progress, cache, resume, on_epoch_end,
                                                    device)


def _prune(cfg: RunConfig, folder: RunFolder, data: DataSplit, dense: Optional[nn.Module], progress: bool,
           cache: Optional[Path], resume: bool, on_epoch_end, device: torch.device) -> Dict:
    if dense is None:  # a config_list NNI rejects fails here, before the dense model is trained
        fresh = build(cfg, data)
        check_config_list(fresh, _config_list(cfg, fresh), cfg.base_pruner)
    dense = dense if dense is not None else dense_model(cfg, data, cache, progress, device)
    random.seed(cfg.seed)  # unused by the run, but checkpoint.pt holds their states: the same run, the same bytes
    np.random.seed(cfg.seed)
    result = prune(dense, data.train_set(), _config_list(cfg, dense), method=cfg.family, method_args=cfg.method_args,
                   base_pruner=cfg.base_pruner, schedule=cfg.schedule, epochs=cfg.epochs,
                   total_times=cfg.total_times, schedule_fraction=cfg.schedule_fraction,
                   batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, progress=progress and is_main(),
                   device=device, checkpoint=folder / CHECKPOINT, resume=resume, on_epoch_end=on_epoch_end)
    info = {'method': cfg.method, 'family': cfg.family, 'method_args': dict(cfg.method_args),
            'schedule': cfg.schedule, 'sparsity': cfg.target_sparsity, 'measured_sparsity': result.sparsity['measured'],
            'seed': cfg.seed, 'seconds': result.seconds, 'summary': result.summary, 'device': str(device),
            'processes': world_size(), 'resumed_from_epoch': result.resumed_from,
            'clean_accuracy': accuracy(result.model, data.x_test, data.y_test)}
    if is_main():
        info = _write_prune(folder, cfg, result, info, data)
    barrier()
    _logger.info('%s at sparsity %.2f (measured %.4f): clean accuracy %.4f, %.1f s', cfg.method, info['sparsity'],
                 info['measured_sparsity'], info['clean_accuracy'], result.seconds)
    return info


def _write_prune(folder: RunFolder, cfg: RunConfig, result, info: Dict, data: DataSplit) -> Dict:
    """``model.pt`` (CPU tensors), ``stats.json``, ``run.json``; then the finished run's checkpoint goes."""
    masks = {k: {t: m.cpu() for t, m in v.items() if m is not None} for k, v in result.masks.items()}
    folder.save_model(result.model.cpu(), masks, cfg, data.input_shape, data.num_classes)
    folder.write_json('stats.json', result.statistics)
    info = folder.write_run(info, cfg.config_hash(), data_hash(data))
    (folder / CHECKPOINT).unlink(missing_ok=True)
    return info


def run_export(run_dir: Path, data: Optional[DataSplit] = None, int8: bool = False, target_cpu: str = 'auto',
               force_int8: bool = False) -> Dict:
    """Speed the run's model up, convert to ``model.onnx``, validate it on the test split; write ``export.json``
    (with the hash of every ONNX file it wrote).

    With ``int8`` also ``model.int8.onnx`` (static QDQ int8, calibrated on 512 training images, validated
    against fp32, the most sensitive layers kept in fp32 when the whole model fails: ``export.json['int8']
    ['fp32_layers']`` says which and why) and its robustness re-checked in onnxruntime next to fp32, quantised
    for ``target_cpu`` (:mod:`nni_bap.export.cpu`). An int8 model slower than fp32 at batch 1 and 64 on this CPU is
    skipped (``export.json['int8']['skipped']``) unless ``force_int8``.
    """
    folder = RunFolder(run_dir)
    with folder.require().lock():
        cfg, model, masks = folder.load_model()
        data = data if data is not None else load_data(cfg)
        info = folder.read_json('run.json') if (folder / 'run.json').exists() else {}
        settings = {k: v for k, v in cfg.to_dict().items() if k in ('base_pruner', 'schedule', 'total_times', 'epochs',
                                                                      'config_list')}
        meta = {'pruning_method': cfg.method, 'pruning_settings': {**settings, 'method_args': info.get('method_args')},
                'dataset': cfg.dataset, 'model': cfg.model, 'model_sha256': folder.hash('model.pt')}
        if folder.check_report(run_spec(cfg, data.input_shape).hash, onnx=False) is None:
            rep = folder.read_json('report.json')
            meta['robustness'] = {'clean_accuracy': rep['clean_accuracy'], 'robust_auc': rep['robust_auc']}
        res = export_onnx(model, str(folder / 'model.onnx'), data.x_test[:8], masks=masks,
                          validation_inputs=data.x_test, metadata=meta)
        d = {**res.to_dict(), 'onnx': 'model.onnx', 'model_hash': meta['model_sha256'],
             'onnx_hash': folder.hash('model.onnx')}
        if int8:
            d['int8'] = _int8(folder, model, data, target_cpu, force_int8)
        folder.write_json('export.json', d)
    return d


def _int8(folder: RunFolder, model: nn.Module, data: DataSplit, target_cpu: str, force: bool = False) -> Dict:
    """``model.int8.onnx`` beside ``model.onnx``, and its accuracy on PGD inputs crafted on the fp32 torch model
    (transfer, :data:`INT8_RECHECK`) and on uniform noise, next to fp32's; or why it was skipped."""
    q = quantize_int8(str(folder / 'model.onnx'), str(folder / 'model.int8.onnx'),
                      data.x_train[:INT8_CALIBRATION].numpy(), data.x_test.numpy(), data.y_test.numpy(),
                      target_cpu=target_cpu, keep_slower=force)
    if q.skipped:
        _logger.warning('%s (--force-int8 writes it anyway)', q.skipped)
        (folder / 'model.int8.onnx').unlink(missing_ok=True)  # an older one would no longer match model.onnx
        return {k: v for k, v in q.to_dict().items() if k not in ('path', 'fp32_path')}
    x, y = data.x_test[:INT8_RECHECK['samples']], data.y_test[:INT8_RECHECK['samples']]
    torch.manual_seed(0)
    adv = craft_transfer_inputs(model, x, y, INT8_RECHECK['budgets'], 'pgd', steps=INT8_RECHECK['steps'])
    check = robustness_recheck(str(folder / 'model.onnx'), str(folder / 'model.int8.onnx'), x.numpy(), y.numpy(), adv)
    return {**{k: v for k, v in q.to_dict().items() if k not in ('path', 'fp32_path')}, 'onnx': 'model.int8.onnx',
            'onnx_hash': folder.hash('model.int8.onnx'), 'robustness': check}


def _onnx_target(folder: RunFolder, onnx: Optional[Path]) -> Optional[Path]:
    """The ONNX file to evaluate beside torch: the folder's own files must match the hash ``export.json`` recorded,
    and every file must record the folder's ``model.pt`` as its source."""
    path = onnx if onnx is not None else (folder / 'model.onnx' if (folder / 'model.onnx').exists() else None)
    if path is None:
        return None
    recorded = folder.recorded_onnx_hash(path.name)
    if recorded is not None and recorded != sha256_file(path):
        raise RunFolderError(f'{path} does not match {folder / "export.json"} (rewritten or damaged since it was '
                             f'exported): run `bap export {folder.path}`')
    source = OnnxClassifier(str(path)).metadata.get('model_sha256')
    if source is None:
        raise RunFolderError(f'{path} records no source model (not written by `bap export`); '
                             f'run `bap export {folder.path}`')
    if source != folder.hash('model.pt'):
        raise RunFolderError(f'{path} was not exported from {folder / "model.pt"} (source hash differs); '
                             f'run `bap export {folder.path}`')
    return path


def _check_onnx_agrees(path: Path, ort: OnnxClassifier, model: nn.Module, x: torch.Tensor) -> Dict[str, float]:
    """onnxruntime's logits against torch's on the clean test inputs ``x``: finite, and the same class on at least
    :data:`ONNX_MIN_AGREEMENT` of them; else :class:`CorruptModelError` (the file is not the model it names)."""
    with torch.no_grad():
        ref = torch.cat([model(x[i:i + 512]) for i in range(0, len(x), 512)]).numpy()
    got = ort.logits(x.numpy())
    bad = int(got.size - np.count_nonzero(np.isfinite(got)))
    if bad:
        raise CorruptModelError(f'{path} gives {bad} non-finite outputs on the {len(x)} clean test inputs; refused, '
                                'no report written')
    precision = ort.metadata.get('precision', 'fp32')
    need = ONNX_MIN_AGREEMENT.get(precision, ONNX_MIN_AGREEMENT['fp32'])
    agree = float((got.argmax(1) == ref.argmax(1)).mean()) if got.shape == ref.shape else 0.0
    if not agree >= need:
        raise CorruptModelError(f'{path} is not the model it claims to be: onnxruntime and torch ({path.parent.name}'
                                f'/model.pt) agree on {agree:.4f} of the {len(x)} clean test inputs, {precision} needs '
                                f'{need:g}; refused, no report written')
    return {'argmax_agreement': agree, 'max_abs_diff': float(np.abs(got - ref).max()) if got.size else 0.0}


def resolve_eval_target(target: Path) -> Tuple[RunFolder, Optional[Path]]:
    """A run folder, or an ``.onnx`` file inside one -> (run folder, ONNX file or None for the folder's own)."""
    target = Path(target)
    if target.suffix == '.onnx':
        if not target.is_file():
            raise RunFolderError(f'{target} does not exist')
        return RunFolder(target.parent).require(), target
    return RunFolder(target).require(), None


def run_eval(target: Path, data: Optional[DataSplit] = None, spec: Optional[EvalSpec] = None, progress: bool = True,
             latency: bool = True, device: Optional[torch.device] = None) -> Dict:
    """Robustness report of a run: torch and, when exported, onnxruntime side by side.

    ``target`` is a run folder (its ``model.onnx`` is used when present) or an ONNX file in a run folder
    (that file is evaluated). Either way the ONNX file must have been exported from the folder's ``model.pt``,
    the folder's own files must match ``export.json``, and onnxruntime must give the torch model's classes on the
    clean test set (:data:`ONNX_MIN_AGREEMENT`, finite outputs): the report never presents a file that is not the
    model it names. With ``latency`` (the ``bap eval`` command) the report also gets onnxruntime latencies,
    the slowest kernels at batch 64, and the ONNX model's accuracy on PGD examples crafted on torch. The torch
    evaluation runs on ``device`` (default: the run's stored ``device`` setting); the rest on the CPU.
    """
    folder, onnx = resolve_eval_target(target)
    with folder.lock():
        cfg, model, _ = folder.load_model()
        onnx = _onnx_target(folder, onnx)
        data = data if data is not None else load_data(cfg)
        spec = run_spec(cfg, data.input_shape, spec)
        ort = OnnxClassifier(str(onnx)) if onnx is not None else None
        check = _check_onnx_agrees(onnx, ort, model, data.x_test) if ort is not None else None
        on = device if device is not None else resolve_device(cfg.device)
        report = evaluate_robustness(model.to(on), data.x_test.to(on), data.y_test.to(on), spec,
                                     classifiers={'onnx': ort} if ort else None, progress=progress, seed=cfg.seed)
        model.cpu()
        report.update(model=cfg.model, dataset=cfg.dataset, method=cfg.method, model_hash=folder.hash('model.pt'),
                      spec_hash=spec.hash, data_hash=data_hash(data), onnx=onnx.name if onnx else None,
                      onnx_hash=folder.hash(onnx.name) if onnx else None, onnx_check=check)
        if ort is not None and latency:
            report.update(_deployment(folder, model, ort, data, cfg.seed))
        write_report(report, folder.path)
        folder.record_report_files()
    return report


def _deployment(folder: RunFolder, model: nn.Module, ort, data: DataSplit, seed: int) -> Dict:
    """Transfer accuracy of torch-crafted PGD examples (:data:`TRANSFER`) in onnxruntime, latencies and the kernel
    profile."""
    torch.manual_seed(seed)
    adv = PGD(model, eps=TRANSFER['eps'], steps=TRANSFER['steps'])(data.x_test, data.y_test)
    atomic_write(folder / TRANSFER['npz'], lambda fh: np.savez(fh, x=adv.numpy(), y=data.y_test.numpy()))
    x = data.x_test.numpy()
    return {'transfer': {'attack': f'pgd eps {TRANSFER["eps"]:g} crafted on torch', 'npz': TRANSFER['npz'],
                         'onnx_accuracy': ort.accuracy_npz(str(folder / TRANSFER['npz'])),
                         'torch_accuracy': accuracy(model, adv, data.y_test)},
            'latency': {f'batch_{b}': ort.latency(batch_size=b, x=x[:b]) for b in (1, 64)},
            'kernels_batch_64': ort.profile(x[:64], repeats=20)[:8]}
