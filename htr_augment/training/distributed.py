"""Process-group setup from torchrun's environment, rank helpers, sum all-reduce, device choice.

One code path for one process and for many: every helper works (as the identity)
when no process group is initialised, so training code never branches on world size
except to wrap the model in DistributedDataParallel.
"""
from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def select_device(preference: str | torch.device | None = None, local_rank: int = 0) -> torch.device:
    """`None`/"auto": CUDA if available, else CPU. A bare "cuda" becomes this process's GPU."""
    if isinstance(preference, torch.device):
        preference = str(preference)
    if preference in (None, "", "auto"):
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(preference)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {preference!r} requested but CUDA is not available (use --device cpu)")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def init_distributed(device: str | torch.device | None = None, timeout_s: float = 1800) -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

    Without torchrun's variables (or with WORLD_SIZE=1) this is a single process.
    NCCL for CUDA devices, Gloo for the CPU. Safe to call when a group already exists
    (e.g. set up by a test with torch.multiprocessing)."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        dev = select_device(device, local_rank)
    else:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        dev = select_device(device, local_rank)
        if world > 1:
            if not dist.is_available():
                raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
            backend = "nccl" if dev.type == "cuda" else "gloo"
            kwargs = {"device_id": dev} if dev.type == "cuda" else {}
            dist.init_process_group(backend, rank=rank, world_size=world,
                                    timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return DistInfo(rank, world, local_rank, dev)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _collective_device() -> torch.device:
    # NCCL reduces CUDA tensors only; Gloo reduces CPU tensors.
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[int | float]) -> list:
    """Element-wise sum over all processes; ints stay exact (int64), floats are float64."""
    values = list(values)
    if not is_distributed():
        return values
    is_int = all(isinstance(v, int) for v in values)
    t = torch.tensor(values, dtype=torch.int64 if is_int else torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [int(v) for v in t.tolist()] if is_int else t.tolist()


def all_gather_objects(obj: object) -> list:
    """Every process's `obj`, in rank order (pickled: small objects only)."""
    if not is_distributed():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: object, src: int = 0) -> object:
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
