"""The DeepSpeed JSON: reading it, resolving the precision, filling its "auto" fields.

The training layer hands in plain numbers (one source of truth for batch sizes: the training
config's `batch`); nothing here knows the training config.
"""

from __future__ import annotations

import difflib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from deepspeed.accelerator import get_accelerator

from rmt_scale.errors import ConfigError
from rmt_scale.resources import find_ds_config

PRECISIONS = ("fp32", "bf16", "fp16")


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


def read_ds_config(name_or_path: str | Path) -> dict:
    """Read a DeepSpeed JSON: a shipped one by name ("zero2") or a file (see find_ds_config)."""
    path = find_ds_config(name_or_path)
    try:
        values = json.loads(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read DeepSpeed config ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: invalid JSON at line {err.lineno} ({err.msg})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a DeepSpeed config must be a JSON object")
    return values


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


def fill_ds_config(ds_config: dict, *, micro_batch: int, grad_accum: int, train_batch: int,
                   grad_clip: float, precision: str, hidden_size: int, optimizer: dict[str, Any],
                   source: str = "deepspeed config") -> dict:
    """A copy of `ds_config` with every "auto" field filled from these values.

    Args:
        ds_config: The JSON as read.
        micro_batch: Samples per rank per forward pass.
        grad_accum: Micro-batches per optimizer step.
        train_batch: Samples per optimizer step over all ranks.
        grad_clip: Global gradient-norm clipping (0: off).
        precision: Resolved precision: fp32, bf16 or fp16.
        hidden_size: The base model's width (ZeRO bucket sizes scale with it).
        optimizer: AdamW values (lr, betas, eps, weight_decay) for an "optimizer" section's
            "auto" params (the offload configs have one, so DeepSpeed picks its CPU Adam).
        source: Name of the JSON, for messages.

    Raises:
        ConfigError: A forced value contradicts the given ones, a section the training config
            owns is present, or an "auto" is left that nothing fills.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"{source}: precision must be resolved to one of {list(PRECISIONS)}, got {precision!r}")
    ds = json.loads(json.dumps(ds_config))
    ranks = train_batch // (micro_batch * grad_accum)
    explain = f"micro_batch_size {micro_batch} x grad_accum {grad_accum} x {ranks} ranks = {train_batch}"
    _fill(ds, "train_micro_batch_size_per_gpu", micro_batch, source, explain)
    _fill(ds, "gradient_accumulation_steps", grad_accum, source, explain)
    _fill(ds, "train_batch_size", train_batch, source, explain)
    _fill(ds, "gradient_clipping", grad_clip, source, "optimizer.grad_clip")
    if "scheduler" in ds:
        raise ConfigError(f"{source}: remove the \"scheduler\" section; the learning rate follows "
                          "schedule.* and the curriculum stages of the training config")
    for name in ("bf16", "fp16"):
        section = ds.setdefault(name, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: \"{name}\" must be a JSON object such as {{\"enabled\": \"auto\"}}, "
                              f"got {json.dumps(section)}")
        wanted = precision == name
        enabled = section.get("enabled", "auto")
        if enabled == "auto":
            section["enabled"] = wanted
        elif bool(enabled) != wanted:
            raise ConfigError(f"{source}: {name}.enabled={enabled} but precision resolves to {precision}; "
                              f"set {name}.enabled to \"auto\" or precision={name if enabled else 'fp32'}")
    if "optimizer" in ds:
        params = ds["optimizer"].setdefault("params", {})
        for key, value in optimizer.items():
            if params.get(key, "auto") == "auto":
                params[key] = list(value) if isinstance(value, tuple) else value
    for name in ("zero_optimization", "optimizer"):
        if not isinstance(ds.get(name, {}), dict):
            raise ConfigError(f"{source}: \"{name}\" must be a JSON object, got {json.dumps(ds[name])}")
    zero = ds.setdefault("zero_optimization", {})
    stage = zero.setdefault("stage", 0)
    if not isinstance(stage, int) or stage not in (0, 1, 2, 3):
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
    check_with_deepspeed(ds, source)
    return ds


# Top-level sections DeepSpeed reads outside DeepSpeedConfig (the engine, the launcher, monitors).
_READ_ELSEWHERE = {"optimizer", "scheduler", "activation_checkpointing", "flops_profiler", "aio", "autotuning",
                   "monitor_config", "zero_optimization", "checkpoint", "train_batch_size"}


class _KeyRecorder(dict):
    """A dict that remembers which keys DeepSpeedConfig looked up, so unknown keys can be named."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.looked_up: set = set()

    def get(self, key, *default):
        self.looked_up.add(key)
        return super().get(key, *default)

    def __getitem__(self, key):
        self.looked_up.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.looked_up.add(key)
        return super().__contains__(key)


def check_with_deepspeed(ds: dict, source: str) -> None:
    """Let DeepSpeed's own config classes validate the filled JSON before any process starts.

    Sections of the wrong type or with bad values, and an optimizer type DeepSpeed cannot build,
    are errors; a top-level key DeepSpeed never reads is an error when it is a near-spelling of
    one it does (a typo would otherwise be ignored without a word), and a warning otherwise.
    """
    from deepspeed.runtime.config import DEEPSPEED_OPTIMIZERS, DeepSpeedConfig

    optimizer = ds.get("optimizer", {}).get("type")
    if optimizer is not None and not (str(optimizer).lower() in DEEPSPEED_OPTIMIZERS
                                      or getattr(torch.optim, str(optimizer), None) is not None):
        raise ConfigError(f"{source}: optimizer.type {optimizer!r} is neither a DeepSpeed optimizer "
                          f"{DEEPSPEED_OPTIMIZERS} nor a torch.optim class")
    # Without a process group DeepSpeedConfig checks batch sizes for one rank; the batch was
    # already checked above, so let it derive train_batch_size for a single rank.
    recorder = _KeyRecorder({key: value for key, value in ds.items() if key != "train_batch_size"})
    logger = logging.getLogger("DeepSpeed")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        DeepSpeedConfig(recorder)
    except Exception as err:  # DeepSpeed raises TypeError, ValueError, AssertionError and pydantic errors
        first = " ".join(str(err).split())[:300]
        raise ConfigError(f"{source}: DeepSpeed rejects this config: {first}") from None
    finally:
        logger.setLevel(level)
    known = recorder.looked_up | _READ_ELSEWHERE
    for key in ds:
        if key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.85)
        if close:
            raise ConfigError(f"{source}: unknown key \"{key}\"; did you mean \"{close[0]}\"?")
        logging.getLogger(__name__).warning("%s: DeepSpeed does not read the key \"%s\"; it has no effect",
                                            source, key)


def _find_auto(node: Any, path: str = "") -> list[str]:
    if isinstance(node, dict):
        return [hit for key, value in node.items() for hit in _find_auto(value, f"{path}.{key}" if path else key)]
    if isinstance(node, list):
        return [hit for i, value in enumerate(node) for hit in _find_auto(value, f"{path}.{i}")]
    return [path] if node == "auto" else []


def enable_universal_loading(ds_config: dict) -> dict:
    """A copy of the filled JSON that loads a DeepSpeed universal checkpoint."""
    ds = dict(ds_config)
    ds["checkpoint"] = {**ds.get("checkpoint", {}), "load_universal": True}
    return ds
