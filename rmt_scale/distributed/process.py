"""Process group, ranks and collectives (DeepSpeed's comm backend: gloo on CPU, NCCL on GPUs)."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import deepspeed
import torch
from deepspeed.accelerator import get_accelerator

from rmt_scale.errors import CheckpointError, DistributedError, RankZeroError

T = TypeVar("T")


def env_rank() -> int:
    """This process's global rank, read from the launcher's environment (0 when run alone)."""
    return int(os.environ.get("RANK", "0"))


def env_world_size() -> int:
    """Number of ranks the launcher started (1 when run alone); known before any process group."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_process_group(timeout_minutes: float) -> None:
    """Start the process group (gloo on CPU, nccl on GPUs: DeepSpeed's accelerator decides).

    Run as a plain `python` process, this sets up a group of one, so the same code path serves
    single-process runs.

    Args:
        timeout_minutes: How long any collective waits for the other ranks before it fails, in
            every process group of this process (see `_default_group_timeout`).
    """
    if "RANK" not in os.environ:
        # Port 0: the group of one's store takes whatever port is free when it binds (a port
        # looked up beforehand could be taken by then, and nobody else needs to find it).
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="0")
    accelerator = get_accelerator()
    if accelerator.device_name() == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    else:
        _no_shared_memory_allreduce()
    timeout = timedelta(minutes=timeout_minutes)
    _default_group_timeout(timeout)
    deepspeed.init_distributed(dist_backend=accelerator.communication_backend_name(),
                               auto_mpi_discovery=False, verbose=False, timeout=timeout)


# DeepSpeed's registry name of its CPU shared-memory all-reduce op (ops/op_builder/cpu/comm.py).
SHM_ALLREDUCE_OP = "deepspeed_shm_comm"


def _no_shared_memory_allreduce() -> None:
    """Keep DeepSpeed's CPU backend from building its shared-memory all-reduce op.

    When the op is available, every rank compiles it and creates a named 67 MB buffer in /dev/shm
    that DeepSpeed never unlinks (a known DeepSpeed behaviour): each CPU launch left 134 MB of RAM
    behind until reboot, and a test suite's worth of launches filled /dev/shm and pushed the machine
    into swapping. The op serves only tensor-parallel inference all-reduce, which training here
    never calls; marking it incompatible makes DeepSpeed fall back to torch.distributed (gloo).
    DeepSpeed caches the probe result in one module-level dict and documents that edits persist.
    """
    import deepspeed.ops

    compatible = getattr(deepspeed.ops, "__compatible_ops__", None)
    if isinstance(compatible, dict):
        compatible[SHM_ALLREDUCE_OP] = False


def _default_group_timeout(timeout: timedelta) -> None:
    """Make `timeout` the default of every process group created in this process.

    The timeout given to init_process_group applies to the world group only. DeepSpeed runs its
    collectives on groups it creates itself (a clone of the world for data parallelism, ZeRO's
    groups) with torch.distributed.new_group and no timeout, and torch gives those its own
    default, 30 minutes for gloo and 10 for NCCL: with one rank stopped, the others waited that
    long whatever dist_timeout_minutes said. new_group reads these module defaults at call time.
    """
    from torch.distributed import distributed_c10d

    distributed_c10d.default_pg_timeout = timeout
    if isinstance(getattr(distributed_c10d, "default_pg_nccl_timeout", None), timedelta):
        distributed_c10d.default_pg_nccl_timeout = timeout


# How torch reports a collective that waited past the timeout (gloo, NCCL, the TCP store).
_TIMEOUT_TEXT = ("Timed out", "timed out", "Timeout", "timeout")
# How gloo reports a peer that went away in the middle of a collective.
_PEER_GONE_TEXT = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def lost_rank_error(err: BaseException, timeout_minutes: float) -> DistributedError | None:
    """A one-line DistributedError when `err` is a collective that failed because another rank
    stopped answering (past the timeout) or exited; None for any other error."""
    dist_error = getattr(torch.distributed, "DistError", RuntimeError)
    if not isinstance(err, (RuntimeError, dist_error)):
        return None
    text, who = str(err), f"rank {rank()}"
    if any(part in text for part in _PEER_GONE_TEXT):
        return DistributedError(f"{who}: another rank exited during a collective operation (its own output "
                                "says why); once that is fixed, launch again with resume=auto")
    if any(part in text for part in _TIMEOUT_TEXT):
        return DistributedError(f"{who}: no answer from another rank within dist_timeout_minutes="
                                f"{timeout_minutes:g} (a rank is stopped, hung or slower than that); end the "
                                "run and launch again with resume=auto, raising dist_timeout_minutes if a "
                                "step or checkpoint legitimately takes longer")
    return None


def teardown(wait: bool = True) -> None:
    """Destroy the process group (ZeRO-3 processes can abort at exit otherwise).

    Args:
        wait: Meet the other ranks first (a clean finish); False on an error path, where
            another rank may be gone and a barrier would hang.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if wait:
            torch.distributed.barrier()
        if deepspeed.comm.is_initialized():
            # DeepSpeed's own destroy also drops the groups it cached (its clone of the world
            # group), so a process that trains again (a test, a notebook) starts from fresh ones.
            deepspeed.comm.destroy_process_group()
        else:
            torch.distributed.destroy_process_group()


def rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else env_rank()


def world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else env_world_size()


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum a few numbers over ranks (float64, on CPU under gloo, on the device otherwise)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device())
    if torch.distributed.is_initialized() and world_size() > 1:
        torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def device() -> torch.device:
    accelerator = get_accelerator()
    if accelerator.device_name() == "cpu":
        return torch.device("cpu")
    return torch.device(accelerator.device_name(int(os.environ.get("LOCAL_RANK", "0"))))


def rank0_first(build: Callable[[], T]) -> T:
    """Run `build` on rank 0, then on the other ranks (caches filled once, read by the rest).

    If it fails on rank 0, every rank raises the same error instead of waiting forever for a
    rank that has gone.
    """
    result = on_rank0(build, catch=(ValueError, OSError))  # the project's errors are ValueErrors
    return result if is_main() else build()


def on_rank0(work: Callable[[], T], catch: tuple[type[BaseException], ...], prefix: str = "") -> T | None:
    """Run `work` on rank 0 only; an error of a `catch` type is raised on every rank.

    Every rank must call it: it ends with a broadcast from rank 0, so it is also a barrier.
    """
    failure: list[Any] = [None]
    result = None
    if is_main():
        try:
            result = work()
        except catch as err:
            failure[0] = (type(err).__name__, f"{prefix}{err}")
    if torch.distributed.is_initialized() and world_size() > 1:
        torch.distributed.broadcast_object_list(failure, src=0)
    if failure[0] is not None:
        name, message = failure[0]
        raise RankZeroError(message, name)
    return result


def raise_if_any(failure: str | None) -> None:
    """Raise CheckpointError(failure) on every rank if any rank has a failure (its message).

    Every rank must call it (an all-gather): a failure on one rank stops all of them with the
    first rank's message, and none waits at a later collective for a rank that has stopped.
    """
    failures = [failure]
    if torch.distributed.is_initialized() and world_size() > 1:
        failures = [None] * world_size()
        torch.distributed.all_gather_object(failures, failure)
    found = [message for message in failures if message is not None]
    if found:
        raise CheckpointError(found[0])
