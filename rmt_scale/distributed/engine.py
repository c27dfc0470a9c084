"""The DeepSpeed engine, ZeRO-3's memory parameter, and training checkpoints (save, load, convert)."""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import deepspeed
import torch
from deepspeed.accelerator import get_accelerator
from torch import nn

from rmt_scale.distributed.checkpoint_reader import safe_torch_load
from rmt_scale.distributed.ds_config import zero_stage
from rmt_scale.distributed.process import barrier, on_rank0, raise_if_any
from rmt_scale.errors import CheckpointError, ConfigError, DistributedError, first_line

logger = logging.getLogger(__name__)

UNIVERSAL_DIR = "universal"
# The extensions DeepSpeed compiles on first use for an "optimizer" section in the JSON (CPU Adam
# and friends for offloaded optimizer state, FusedAdam on GPUs); their build directories' names.
OPTIMIZER_EXTENSIONS = ("cpu_adam", "cpu_adagrad", "cpu_lion", "fused_adam")
# A build takes a few minutes even on 2 cores; a lock file much older than that is a leftover.
STALE_BUILD_LOCK_MINUTES = 15.0


def partitions_parameters(ds_config: dict) -> bool:
    """Whether the JSON partitions the parameters themselves over ranks (ZeRO-3)."""
    return zero_stage(ds_config) == 3


def create_engine(model: nn.Module, ds_config: dict, adamw: dict[str, Any]):
    """Wrap the memory model in a DeepSpeed engine with AdamW over its trainable parameters.

    Args:
        model: The memory model, with exactly the parameters that train requiring grad.
        ds_config: The filled JSON.
        adamw: Keyword arguments of torch.optim.AdamW (lr, betas, eps, weight_decay); unused when
            the JSON has an "optimizer" section (the offload configs do, so DeepSpeed picks its
            CPU Adam, filled from the same values).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = None
    if "optimizer" in ds_config:
        refuse_stale_build_locks()
    else:
        optimizer = torch.optim.AdamW(params, **{**adamw, "betas": tuple(adamw["betas"])})
    if partitions_parameters(ds_config):
        # The segment loop reads the memory parameter outside its owning module's forward;
        # ZeRO-3 must gather it when the top-level forward runs (and it is partitioned like
        # every other weight).
        deepspeed.zero.register_external_parameter(model, model.memory)
        if model.config.memory_norm == "soft_token":
            # The soft-token write mixes the input embedding table outside its module's forward,
            # the case DeepSpeed documents this call for (a tiny 2-rank ZeRO-3 run trained the
            # same without it, the table being gathered anyway; this does not rely on that).
            deepspeed.zero.register_external_parameter(model, model.base.get_input_embeddings().weight)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, model_parameters=params,
                                      config=ds_config)
    return engine


def refuse_stale_build_locks(now: float | None = None) -> None:
    """Stop with a clear error where DeepSpeed would wait forever on a dead build's lock.

    torch compiles DeepSpeed's optimizer extensions under a lock file that only the building
    process removes; a build that was killed (Ctrl-C, a timeout, OOM) leaves it behind, and every
    later launch that needs the extension then sleeps on it with no message at all.
    """
    from torch.utils.cpp_extension import get_default_build_root

    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
    now = time.time() if now is None else now
    for name in OPTIMIZER_EXTENSIONS:
        for lock in sorted(root.glob(f"*/{name}/lock")):
            with contextlib.suppress(OSError):
                minutes = (now - lock.stat().st_mtime) / 60
                if minutes > STALE_BUILD_LOCK_MINUTES:
                    raise DistributedError(
                        f"{lock}: the build lock of DeepSpeed's {name} extension is {minutes:.0f} minutes "
                        f"old, left by a build that was interrupted, and DeepSpeed would wait on it forever; "
                        f"delete it (when no other launch is compiling) and launch again")


def release_engine(engine) -> None:
    """Free what the engine holds (ZeRO-3 hooks, optimizer partitions, cached device memory), so
    that the process can export or exit without the training state in memory."""
    engine.destroy()
    get_accelerator().empty_cache()


def set_learning_rate(engine, lr: float) -> None:
    for group in engine.optimizer.param_groups:
        group["lr"] = lr


def step_applied(engine) -> bool:
    """Whether the last optimizer step changed the weights. ZeRO's optimizers (and fp16 loss
    scaling) discard a step whose gradients are not finite; the same on every rank."""
    return bool(engine.was_step_applied())


def describe_partitioning(param: nn.Parameter) -> str:
    """How ZeRO holds `param` on this rank (for the startup log)."""
    if hasattr(param, "ds_id"):
        return f"partitioned by ZeRO-3 ({param.ds_tensor.numel()} of {param.ds_numel} elements on this rank)"
    return "replicated on every rank"


def save_checkpoint(engine, save_dir: Path, tag: str) -> None:
    """DeepSpeed checkpoint of the trainable weights and optimizer state into save_dir/tag.

    Frozen base weights are not written: they come from the base checkpoint (or the seeded
    random init) at every launch, which keeps a 7B LoRA checkpoint to megabytes.

    Raises (on every rank, whichever rank's write failed):
        CheckpointError: A file could not be written; "disk full" when that is why.
    """
    recorder = _WriteFailures(engine.checkpoint_engine)
    engine.checkpoint_engine = recorder
    try:
        engine.save_checkpoint(str(save_dir), tag=tag, save_latest=False, exclude_frozen_parameters=True)
    finally:
        engine.checkpoint_engine = recorder.inner
    raise_if_any(recorder.failure)


# What torch.save says when the disk fills up under it (its zip writer checks positions, not errno).
_DISK_FULL_TEXT = ("unexpected pos", "file write failed", "No space left on device")


def is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(err, RuntimeError) and any(text in str(err) for text in _DISK_FULL_TEXT)


class _WriteFailures:
    """The engine's checkpoint engine, except that a failed write is recorded, not raised.

    engine.save_checkpoint meets the other ranks in barriers and all-reduces between its writes;
    a rank that raised half-way would leave them waiting there. Recording the failure lets every
    rank finish the same sequence of collectives, and `raise_if_any` then stops all of them.
    """

    def __init__(self, inner):
        self.inner = inner
        self.failure: str | None = None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _record(self, path, err: Exception) -> None:
        if self.failure is None:
            self.failure = (f"disk full while saving {path}" if is_disk_full(err)
                            else f"cannot write {path} ({first_line(err)})")

    def makedirs(self, path, exist_ok=False):
        try:
            self.inner.makedirs(path, exist_ok=exist_ok)
        except OSError as err:
            self._record(path, err)

    def save(self, state_dict, path: str):
        if self.failure is not None:
            return None  # the checkpoint is lost already; do not fill the disk further
        try:
            return self.inner.save(state_dict, path)
        except (OSError, RuntimeError) as err:
            self._record(path, err)
            return None


def needs_universal(saved_world: int, saved_stage: int, num_ranks: int, stage: int) -> bool:
    """Whether a checkpoint written by `saved_world` ranks at ZeRO `saved_stage` must go through
    DeepSpeed's universal format to load on `num_ranks` ranks at ZeRO `stage`."""
    if saved_world == num_ranks and saved_stage == stage:
        return False
    if saved_stage == 0 and stage == 0:
        return False  # without ZeRO every rank holds the whole optimizer state
    if saved_stage == 0 or stage == 0:
        raise ConfigError(
            f"the checkpoint was written at ZeRO stage {saved_stage} and this run uses stage "
            f"{stage}; moving between stage 0 and ZeRO is not supported, keep the stage (the number "
            "of ranks may change)"
        )
    return True


def prepare_universal(checkpoint_dir: Path) -> None:
    """Convert a ZeRO checkpoint to DeepSpeed's universal format (once, on rank 0), so that it
    loads on another number of ranks or ZeRO stage. The result sits in checkpoint_dir/universal,
    written under a temporary name and renamed, like the checkpoints themselves."""
    target = checkpoint_dir / UNIVERSAL_DIR

    def convert() -> None:
        if target.is_dir():
            return
        from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

        tmp = checkpoint_dir / f"{UNIVERSAL_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        logger.info("converting %s to DeepSpeed's universal checkpoint format", checkpoint_dir.name)
        args = argparse.Namespace(input_folder=str(checkpoint_dir / "deepspeed"), output_folder=str(tmp),
                                  num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False,
                                  strict=True, inject_missing_state=True)
        with contextlib.redirect_stdout(_LogWriter()), safe_torch_load():
            ds_to_universal(args)
        os.replace(tmp, target)

    # Whatever the converter raises, every rank must stop, not wait at the next collective.
    on_rank0(convert, catch=(Exception,), prefix=f"{checkpoint_dir}: cannot convert to a universal checkpoint: ")
    barrier()


class _LogWriter:
    """A file-like sink that sends the converter's prints to the debug log."""

    def write(self, text: str) -> None:
        if text.strip():
            logger.debug(text.rstrip())

    def flush(self) -> None:
        pass


def load_checkpoint(engine, checkpoint_dir: Path, universal: bool) -> None:
    """Load the weights and optimizer state written by `save_checkpoint` (or its universal form)."""
    load_dir, tag = (checkpoint_dir, UNIVERSAL_DIR) if universal else (checkpoint_dir, "deepspeed")
    with safe_torch_load():  # DeepSpeed's loads unpickle anything otherwise
        path, _ = engine.load_checkpoint(str(load_dir), tag=tag, load_module_strict=False,
                                         load_optimizer_states=True, load_lr_scheduler_states=False)
    if path is None:
        raise CheckpointError(f"{checkpoint_dir}: DeepSpeed could not load this checkpoint; resume from "
                              "another one (resume=PATH) or start a new output_dir")
