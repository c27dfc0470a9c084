"""DeepSpeed config filling, engine, ZeRO-3 gathering and training checkpoints."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import deepspeed
import torch
from deepspeed.accelerator import get_accelerator
from torch import nn

from rmt_scale.distributed.process import _on_rank0, barrier, is_main
from rmt_scale.errors import ConfigError
from rmt_scale.training.config import TrainConfig

logger = logging.getLogger(__name__)
T = TypeVar("T")

UNIVERSAL_DIR = "universal"
# Shipped recipes name ds_configs/*.json relative to the repository: rmt_scale/distributed/engine.py
# is three levels below it.
REPO_ROOT = Path(__file__).resolve().parents[2]



def resolve_precision(precision: str) -> str:
    """"auto" -> bf16 on GPUs that support it, fp16 on older ones, fp32 on CPU."""
    accelerator = get_accelerator()
    on_cpu = accelerator.device_name() == "cpu"
    if precision == "auto":
        if on_cpu:
            return "fp32"
        return "bf16" if accelerator.is_bf16_supported() else "fp16"
    if on_cpu and precision == "fp16":
        raise ConfigError("precision=fp16 needs a GPU; use fp32 (or bf16) on CPU")
    return precision


def read_ds_config(path: str | Path) -> dict:
    """Read a DeepSpeed JSON (relative paths: working directory, then the repository root)."""
    path = resolve_ds_path(path)
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"deepspeed config {path} not found") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read DeepSpeed config ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: invalid JSON at line {err.lineno} ({err.msg})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a DeepSpeed config must be a JSON object")
    return values


def resolve_ds_path(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists():
        return path
    in_repo = REPO_ROOT / path
    if in_repo.exists():
        return in_repo
    raise ConfigError(f"deepspeed config {path} not found (tried the working directory and the repository root)")


def zero_stage(ds_config: dict) -> int:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


def _fill(section: dict, key: str, value: Any, where: str, explain: str) -> None:
    """Set an "auto" (or missing) field; a forced number that disagrees is an error."""
    current = section.get(key, "auto")
    if current == "auto":
        section[key] = value
    elif current != value:
        raise ConfigError(f"{where}: {key}={current!r} but the training config gives {value!r} "
                          f"({explain}); set it to \"auto\"")


def fill_ds_config(ds_config: dict, config: TrainConfig, num_ranks: int, precision: str,
                   hidden_size: int, source: str = "deepspeed config") -> dict:
    """A copy of `ds_config` with every "auto" field filled from the training config.

    Args:
        ds_config: The JSON as read.
        config: The training config (batch sizes, optimizer, clipping come from here).
        num_ranks: World size.
        precision: Resolved precision: fp32, bf16 or fp16.
        hidden_size: The base model's width (ZeRO bucket sizes scale with it).
        source: Name of the JSON, for messages.

    Raises:
        ConfigError: A forced value contradicts the training config, a section the training
            config owns is present, or an "auto" is left that nothing fills.
    """
    ds = json.loads(json.dumps(ds_config))
    micro, accum, total = config.batch.resolve(num_ranks)
    explain = f"micro_batch_size {micro} x grad_accum {accum} x {num_ranks} ranks = {total}"
    _fill(ds, "train_micro_batch_size_per_gpu", micro, source, explain)
    _fill(ds, "gradient_accumulation_steps", accum, source, explain)
    _fill(ds, "train_batch_size", total, source, explain)
    _fill(ds, "gradient_clipping", config.optimizer.grad_clip, source, "optimizer.grad_clip")
    if "scheduler" in ds:
        raise ConfigError(f"{source}: remove the \"scheduler\" section; the learning rate follows "
                          "schedule.* and the curriculum stages of the training config")
    for name in ("bf16", "fp16"):
        section = ds.setdefault(name, {})
        wanted = precision == name
        enabled = section.get("enabled", "auto")
        if enabled == "auto":
            section["enabled"] = wanted
        elif bool(enabled) != wanted:
            raise ConfigError(f"{source}: {name}.enabled={enabled} but precision resolves to {precision}; "
                              f"set {name}.enabled to \"auto\" or precision={name if enabled else 'fp32'}")
    if "optimizer" in ds:
        params = ds["optimizer"].setdefault("params", {})
        opt = config.optimizer
        for key, value in (("lr", opt.lr), ("betas", list(opt.betas)), ("eps", opt.eps),
                           ("weight_decay", opt.weight_decay)):
            if params.get(key, "auto") == "auto":
                params[key] = value
    zero = ds.setdefault("zero_optimization", {})
    stage = zero.setdefault("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"{source}: zero_optimization.stage must be 0, 1, 2 or 3, got {stage!r}")
    buckets = {
        "reduce_bucket_size": hidden_size * hidden_size,
        "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
        "stage3_param_persistence_threshold": 10 * hidden_size,
    }
    for key, value in buckets.items():
        if zero.get(key) == "auto":
            zero[key] = value
    ds.setdefault("steps_per_print", 10**9)  # the trainer logs; DeepSpeed's own step lines are noise
    ds.setdefault("wall_clock_breakdown", False)
    left = _find_auto(ds)
    if left:
        raise ConfigError(f"{source}: nothing fills \"auto\" at {left}; give values there")
    if config.model.load_in_4bit and stage == 3:
        raise ConfigError(f"{source}: ZeRO-3 cannot partition 4-bit weights; use zero2 with model.load_in_4bit")
    return ds


def _find_auto(node: Any, path: str = "") -> list[str]:
    if isinstance(node, dict):
        return [hit for key, value in node.items() for hit in _find_auto(value, f"{path}.{key}" if path else key)]
    if isinstance(node, list):
        return [hit for i, value in enumerate(node) for hit in _find_auto(value, f"{path}.{i}")]
    return [path] if node == "auto" else []


# --- engine ------------------------------------------------------------------------------------


def create_engine(model: nn.Module, ds_config: dict, config: TrainConfig):
    """Wrap the memory model in a DeepSpeed engine with AdamW over its trainable parameters.

    The optimizer is torch's AdamW built from `optimizer.*`, unless the JSON has an "optimizer"
    section (the offload configs do, so DeepSpeed picks its CPU Adam).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = None
    if "optimizer" not in ds_config:
        opt = config.optimizer
        optimizer = torch.optim.AdamW(params, lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps,
                                      weight_decay=opt.weight_decay)
    if zero_stage(ds_config) == 3:
        # The segment loop reads the memory parameter outside its owning module's forward;
        # ZeRO-3 must gather it when the top-level forward runs (and it is partitioned like
        # every other weight).
        deepspeed.zero.register_external_parameter(model, model.memory)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, model_parameters=params,
                                      config=ds_config)
    return engine


def set_learning_rate(engine, lr: float) -> None:
    for group in engine.optimizer.param_groups:
        group["lr"] = lr


@contextlib.contextmanager
def gathered(params: list[nn.Parameter]) -> Iterator[None]:
    """Full (unpartitioned) values of `params` inside the block under ZeRO-3; no-op otherwise."""
    if any(hasattr(p, "ds_id") for p in params):
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            yield
    else:
        yield


def parameter_count(params) -> int:
    """Elements of parameters, also once ZeRO-3 has partitioned them."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in params)


def describe_partitioning(param: nn.Parameter) -> str:
    """How ZeRO holds `param` on this rank (for the startup log)."""
    if hasattr(param, "ds_id"):
        return f"partitioned by ZeRO-3 ({param.ds_tensor.numel()} of {param.ds_numel} elements on this rank)"
    return "replicated on every rank"


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """fp32 CPU copies of the trainable weights, gathered under ZeRO-3 (every rank gets them)."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    with gathered([p for _, p in named]):
        return {name: p.detach().float().cpu().clone() for name, p in named}


def export_model(model: nn.Module, path: Path, base_path: str | None) -> None:
    """Write the memory model (adapter + memory + RMT config) to `path` from rank 0."""
    params = [p for p in model.parameters() if p.requires_grad]
    with gathered(params):
        if is_main():
            model.save_pretrained(path, base_model_name_or_path=base_path)
    barrier()


# --- checkpoints -------------------------------------------------------------------------------


def save_checkpoint(engine, save_dir: Path, tag: str) -> None:
    """DeepSpeed checkpoint of the trainable weights and optimizer state into save_dir/tag.

    Frozen base weights are not written: they come from the base checkpoint (or the seeded
    random init) at every launch, which keeps a 7B LoRA checkpoint to megabytes.
    """
    engine.save_checkpoint(str(save_dir), tag=tag, save_latest=False, exclude_frozen_parameters=True)


def needs_universal(saved: dict, num_ranks: int, stage: int) -> bool:
    """Whether a checkpoint written as `saved` ({"world_size", "zero_stage"}) must go through
    DeepSpeed's universal format to load on `num_ranks` ranks at ZeRO `stage`."""
    same = saved["world_size"] == num_ranks and saved["zero_stage"] == stage
    if same:
        return False
    if saved["zero_stage"] == 0 and stage == 0:
        return False  # without ZeRO every rank holds the whole optimizer state
    if saved["zero_stage"] == 0 or stage == 0:
        raise ConfigError(
            f"the checkpoint was written at ZeRO stage {saved['zero_stage']} and this run uses stage "
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
        with contextlib.redirect_stdout(_LogWriter()):
            ds_to_universal(args)
        os.replace(tmp, target)

    # Whatever the converter raises, every rank must stop, not wait at the next collective.
    _on_rank0(convert, catch=(Exception,), prefix=f"{checkpoint_dir}: cannot convert to a universal checkpoint: ")
    barrier()


class _LogWriter:
    """A file-like sink that sends the converter's prints to the debug log."""

    def write(self, text: str) -> None:
        if text.strip():
            logger.debug(text.rstrip())

    def flush(self) -> None:
        pass


def enable_universal_loading(ds_config: dict) -> dict:
    ds = dict(ds_config)
    ds["checkpoint"] = {**ds.get("checkpoint", {}), "load_universal": True}
    return ds


def load_checkpoint(engine, checkpoint_dir: Path, universal: bool) -> None:
    """Load the weights and optimizer state written by `save_checkpoint` (or its universal form)."""
    load_dir, tag = (checkpoint_dir, UNIVERSAL_DIR) if universal else (checkpoint_dir, "deepspeed")
    path, _ = engine.load_checkpoint(str(load_dir), tag=tag, load_module_strict=False,
                                     load_optimizer_states=True, load_lr_scheduler_states=False)
    if path is None:
        raise ConfigError(f"{checkpoint_dir}: DeepSpeed could not load this checkpoint")


# --- reading a checkpoint offline (export) -----------------------------------------------------


