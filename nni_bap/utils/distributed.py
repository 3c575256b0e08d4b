"""Several processes (``torchrun``): process group, sharded loader, DDP wrapper and the collectives the library needs.

Data parallel training as the library does it:

- ``torchrun --nproc_per_node=N`` starts N processes; :func:`init_distributed` joins them (gloo on the CPU,
  nccl on CUDA). Everything here is a no-op in one process, so single-process runs are unchanged.
- Every process builds the same model from the same seed and the same NNI pruner around it. The training
  function (:func:`nni_bap.pruning.training.make_training_func`) wraps the *NNI-wrapped* model in
  ``DistributedDataParallel`` for the training step, after NNI bound the model to the evaluator and rebuilt the
  optimizer: DDP averages the gradient of the whole loss (the clean forward through DDP and the pruner's
  adversarial forward through the plain model meet in the same parameters), so the weights, and the masks NNI
  computes from them, stay identical on every process.
- :func:`train_loader` shards the data with a seeded ``DistributedSampler`` (``set_epoch`` every epoch); the
  batch size is per process, the global batch ``N x batch_size``.
- :func:`global_mean` is the mean over the global batch (the adaptive cutoff); :func:`all_mean` averages the
  logged loss, so a diverging loss stops every process at the same step.
- Only rank 0 writes files (:func:`is_main`).
"""
from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .device import model_device

__all__ = ['agree', 'all_mean', 'barrier', 'close_distributed', 'global_mean', 'init_distributed', 'is_distributed',
           'is_main', 'launched', 'rank', 'set_epoch', 'sync_buffers', 'train_loader', 'world_size', 'wrap_ddp']

_logger = logging.getLogger(__name__)


def launched() -> bool:
    """Whether this process was started as one of several (``torchrun`` sets ``WORLD_SIZE``)."""
    return int(os.environ.get('WORLD_SIZE', '1')) > 1


def is_distributed() -> bool:
    """Whether a process group of more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 in one process)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this process writes files and shows progress: rank 0, or the only process."""
    return rank() == 0


def init_distributed(device: torch.device) -> bool:
    """Join the ``torchrun`` process group (gloo for the CPU, nccl for CUDA) when launched as several processes.

    Returns whether a group was created here (close it with :func:`close_distributed`); ``False`` when not
    launched or already initialised.
    """
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return False
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    dist.init_process_group(backend='nccl' if device.type == 'cuda' else 'gloo')
    _logger.info('process %d of %d on %s (%s)', dist.get_rank(), dist.get_world_size(), device, dist.get_backend())
    return True


def close_distributed() -> None:
    """Destroy the process group, if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op in one)."""
    if is_distributed():
        dist.barrier()


def global_mean(values: Tensor) -> Tensor:
    """The mean of ``values`` over every process's ``values``: sum and count all-reduced (a collective: every
    process must call it); in one process the plain mean. 0-d, ``values``' dtype and device; 0 without values.

    N processes with batches of B then give what one process gives with the N x B batch.
    """
    if not is_distributed():
        return values.mean() if values.numel() else values.new_zeros(())
    v = values.detach().flatten()
    total = torch.stack([v.double().sum(), torch.tensor(float(v.numel()), dtype=torch.float64, device=v.device)])
    dist.all_reduce(total)
    return (total[0] / total[1]).to(values.dtype) if total[1] > 0 else values.new_zeros(())


def all_mean(value: Tensor) -> Tensor:
    """``value`` (a scalar) averaged over the processes, detached; ``value`` itself in one process."""
    if not is_distributed():
        return value
    v = value.detach().clone()
    dist.all_reduce(v)
    return v / dist.get_world_size()


def agree(flag: bool) -> bool:
    """Rank 0's ``flag`` on every process (a decision every process must take the same way)."""
    if not is_distributed():
        return flag
    box = [bool(flag)]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def sync_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers that carry no gradient (BatchNorm statistics, masks) to every process."""
    if is_distributed():
        with torch.no_grad():
            for b in model.buffers():
                if not b.requires_grad:
                    dist.broadcast(b, src=0)


def wrap_ddp(model: nn.Module) -> nn.Module:
    """``DistributedDataParallel(model)`` in several processes (rank 0's weights broadcast), else ``model``."""
    if not is_distributed():
        return model
    device = model_device(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == 'cuda' else None)


def train_loader(dataset: Dataset, batch_size: int, seed: int) -> DataLoader:
    """Shuffling training loader, seeded: this process's shard (``DistributedSampler``) in several processes."""
    generator = torch.Generator().manual_seed(seed)
    if not is_distributed():
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
    sampler = DistributedSampler(dataset, num_replicas=world_size(), rank=rank(), shuffle=True, seed=seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=generator)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell the loader's sampler the epoch (a ``DistributedSampler`` reshuffles by it)."""
    sampler = getattr(loader, 'sampler', None)
    if hasattr(sampler, 'set_epoch'):
        sampler.set_epoch(epoch)
