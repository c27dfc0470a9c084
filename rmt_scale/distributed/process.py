"""Process group, ranks and collectives (DeepSpeed's comm backend: gloo on CPU, NCCL on GPUs)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import deepspeed
import torch
from deepspeed.accelerator import get_accelerator

from rmt_scale.errors import RankZeroError

T = TypeVar("T")


def env_rank() -> int:
    """This process's global rank, read from the launcher's environment (0 when run alone)."""
    return int(os.environ.get("RANK", "0"))


def env_world_size() -> int:
    """Number of ranks the launcher started (1 when run alone); known before any process group."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_process_group(timeout_minutes: int) -> None:
    """Start the process group (gloo on CPU, nccl on GPUs: DeepSpeed's accelerator decides).

    Run as a plain `python` process, this sets up a group of one, so the same code path serves
    single-process runs.
    """
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))
    accelerator = get_accelerator()
    if accelerator.device_name() == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    deepspeed.init_distributed(dist_backend=accelerator.communication_backend_name(),
                               auto_mpi_discovery=False, verbose=False,
                               timeout=timedelta(minutes=timeout_minutes))


def teardown(wait: bool = True) -> None:
    """Destroy the process group (ZeRO-3 processes can abort at exit otherwise).

    Args:
        wait: Meet the other ranks first (a clean finish); False on an error path, where
            another rank may be gone and a barrier would hang.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if wait:
            torch.distributed.barrier()
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
