"""The device and multi-process training under ``torchrun`` (DDP): the process group, per-rank
sampling and gathering results. With a single process every function here is a no-op or the identity.

    torchrun --nproc_per_node 4 train.py --dataset ferplus --preset paper-r18
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def resolve_device(spec: str = "auto") -> torch.device:
    """'auto' -> CUDA where available, else the CPU; any other spec as torch names it."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def setup(device_spec: str = "auto") -> torch.device:
    """Join the process group when started by torchrun; return this process's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return resolve_device(device_spec)
    use_cuda = torch.cuda.is_available() and device_spec != "cpu"
    if not dist.is_initialized():
        # metrics are summed and gathered as CPU tensors: gloo carries those beside NCCL
        dist.init_process_group("cpu:gloo,cuda:nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Only the main process writes files and prints progress."""
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def gather(t: torch.Tensor) -> torch.Tensor:
    """Concatenate a CPU tensor's shards from every process (rank order)."""
    if not dist.is_initialized():
        return t
    parts = [None] * world_size()
    dist.all_gather_object(parts, t.cpu())
    return torch.cat(parts)


def sum_all(values: dict) -> dict:
    """Sum a dict of numbers over all processes."""
    if not dist.is_initialized():
        return {k: float(v) for k, v in values.items()}
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


class EpochSampler(Sampler):
    """Training order: a seeded shuffle per epoch, or class-balanced draws with replacement
    (``balance='oversample'``), the same on every process and split between them.

    Call ``set_epoch(e)`` before each epoch; the order depends only on (seed, epoch).
    """

    def __init__(self, targets: list[int], seed: int = 0, balance: str = "none"):
        if balance not in ("none", "oversample"):
            raise ValueError(f"balance must be 'none' or 'oversample', not {balance!r}.")
        self.targets = torch.as_tensor(targets)
        self.seed, self.balance, self.epoch = seed, balance, 0
        self.per_rank = len(self.targets) // world_size()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        n = len(self.targets)
        if self.balance == "oversample":
            weights = 1.0 / torch.bincount(self.targets).double()[self.targets]
            order = torch.multinomial(weights, n, replacement=True, generator=g)
        else:
            order = torch.randperm(n, generator=g)
        return iter(order[rank()::world_size()][: self.per_rank].tolist())

    def __len__(self) -> int:
        return self.per_rank


class ShardSampler(Sampler):
    """Evaluation: every index exactly once across processes, in order (rank r takes r, r+W, ...)."""

    def __init__(self, n: int):
        self.indices = list(range(rank(), n, world_size()))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
