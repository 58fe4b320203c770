"""Multi-process (torchrun) plumbing: rank/world size from the environment, process-group set-up, collectives.

Every function works unchanged in a single process (rank 0 of 1), so callers need no special case.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist

from .errors import StyleFusionError, first_line


class DistributedError(StyleFusionError):
    """The process group could not start, or a peer process died or timed out."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank, the number of processes, and the device it should use."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, shows progress and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError:
        raise DistributedError(f"environment variable {name}={value!r} is not an integer") from None


def distributed_context() -> tuple[int, int]:
    """(rank, world_size) from torchrun's environment variables; (0, 1) in a plain single process.

    Needs no process group, so modes that only shard their inputs (take every world_size-th file) can use it.
    """
    world_size = max(1, _env_int("WORLD_SIZE", 1))
    rank = _env_int("RANK", 0) if world_size > 1 else 0
    if not 0 <= rank < world_size:
        raise DistributedError(f"RANK={rank} is outside 0..{world_size - 1} (WORLD_SIZE={world_size})")
    return rank, world_size


def rank_device(device: torch.device) -> torch.device:
    """This process's device: under torchrun (WORLD_SIZE > 1) CUDA means cuda:LOCAL_RANK, one GPU per process."""
    rank, world_size = distributed_context()
    if world_size == 1 or device.type != "cuda":
        return device
    local_rank = _env_int("LOCAL_RANK", rank)
    if local_rank >= torch.cuda.device_count():
        raise DistributedError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s); "
                               "use --nproc_per_node <= the number of GPUs")
    return torch.device("cuda", local_rank)


@contextlib.contextmanager
def process_group(device: torch.device, timeout_s: float = 600.0) -> Iterator[DistContext]:
    """Join torchrun's process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo otherwise); leave it at exit.

    On CUDA each process takes the GPU cuda:LOCAL_RANK. The timeout turns a dead or stuck peer into an
    error instead of a hang. In a single process this yields DistContext(device=device) and does nothing.
    """
    rank, world_size = distributed_context()
    if world_size == 1:
        yield DistContext(device=device)
        return
    local_rank = _env_int("LOCAL_RANK", rank)
    device = rank_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    owned = not dist.is_initialized()
    if owned:
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError, dist.DistError) as exc:
            raise DistributedError(f"cannot start distributed training ({backend}): {first_line(exc)}; "
                                   "launch with torchrun --nproc_per_node N") from None
    try:
        yield DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                          device=device)
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a tensor over all processes (in place); a no-op in a single process."""
    if ctx.distributed:
        try:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        except (RuntimeError, dist.DistError) as exc:
            raise DistributedError(f"rank {ctx.rank}: a peer process stopped or timed out "
                                   f"({first_line(exc)})") from None
    return tensor


def any_process(flag: bool, ctx: DistContext) -> bool:
    """True when `flag` is true on at least one process (used to stop all ranks at the same step)."""
    if not ctx.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    return bool(all_reduce_sum(value, ctx).item() > 0)


def gather_ints(values: set[int], ctx: DistContext) -> set[int]:
    """Union of a set of integers over all processes (e.g. indices of unreadable files each rank met)."""
    if not ctx.distributed:
        return set(values)
    gathered: list[list[int] | None] = [None] * ctx.world_size
    try:
        dist.all_gather_object(gathered, sorted(values))
    except (RuntimeError, dist.DistError) as exc:
        raise DistributedError(f"rank {ctx.rank}: a peer process stopped or timed out "
                               f"({first_line(exc)})") from None
    return {int(v) for part in gathered for v in (part or [])}


def barrier(ctx: DistContext) -> None:
    """Wait for every process (e.g. until rank 0 has written a file); a no-op in a single process."""
    if ctx.distributed:
        try:
            if ctx.device.type == "cuda":
                dist.barrier(device_ids=[ctx.device.index])
            else:
                dist.barrier()
        except (RuntimeError, dist.DistError) as exc:
            raise DistributedError(f"rank {ctx.rank}: a peer process stopped or timed out "
                                   f"({first_line(exc)})") from None
