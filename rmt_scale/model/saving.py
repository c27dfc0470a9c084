"""Saving and loading a memory model: PEFT adapter (if any) + memory + RMT config.

Directory layout written by `RecurrentMemoryModel.save_pretrained(path)`::

    path/
      rmt_config.json            RMTConfig
      memory.safetensors         {"memory": (M, D)}
      rmt_base.json              {"base_model_name_or_path": ...}: where the base came from; a
                                 relative path is relative to this directory (e.g. "base")
      adapter_config.json        } written by PEFT itself when the base is a PeftModel, so
      adapter_model.safetensors  } plain `PeftModel.from_pretrained(base, path)` loads it
      finetuned_modules.safetensors  base weights trained in full without LoRA (only when asked:
                                 `finetuned_modules=`), keyed like the base's own state dict

Everything is written to a temporary sibling directory first and renamed into place, so an
interrupted save never leaves a half-written directory at `path`. Nothing is unpickled on load.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rmt_scale.config import RMTConfig
from rmt_scale.errors import AdapterError, ConfigError
from rmt_scale.model.memory import unwrap_causal_lm

RMT_CONFIG_FILE = "rmt_config.json"
MEMORY_FILE = "memory.safetensors"
BASE_FILE = "rmt_base.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"
FINETUNED_FILE = "finetuned_modules.safetensors"


@contextmanager
def atomic_directory(path: str | Path):
    """Yield a temporary directory that replaces `path` only if the block finishes.

    The temporary directory sits beside `path` (same filesystem), so the final rename is atomic;
    an existing `path` is moved aside first and deleted only after the new one is in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result should be an ordinary dir
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def forget_quantization(model) -> None:
    """Make a model whose weights are now plain floats (a de-quantized GGUF or 4-bit checkpoint)
    save as an ordinary checkpoint.

    transformers keeps the quantizer, its config entry and the weight conversions it loaded with;
    `save_pretrained` then refuses (GGUF) or tries to re-quantize (bitsandbytes). Dropping them is
    right only once every weight has been de-quantized.
    """
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "_weight_conversions", None) is not None:
        model._weight_conversions = None  # fall back to the architecture's default mapping


def save_memory_model(model, path: str | Path, base_model_name_or_path: str | None = None,
                      extra_files: Callable[[Path], None] | None = None,
                      finetuned_modules: Sequence[str] = ()) -> None:
    """Write `model` (a RecurrentMemoryModel) to `path` atomically.

    Args:
        model: The memory model.
        path: Output directory (replaced if it exists).
        base_model_name_or_path: Where the base checkpoint lives; defaults to what the base's
            config records.
        extra_files: Called with the temporary directory to add files (tokenizer, model card)
            before it is moved into place.
        finetuned_modules: Module names (suffixes, e.g. lm_head) of a base without LoRA whose
            weights were trained in full; saved to finetuned_modules.safetensors. With LoRA,
            PEFT's modules_to_save already holds them.
    """
    base = model.base
    lm = unwrap_causal_lm(base)
    with atomic_directory(path) as tmp:
        model.config.save(tmp / RMT_CONFIG_FILE)
        memory = model.memory.detach().to("cpu").contiguous()
        save_file({"memory": memory}, str(tmp / MEMORY_FILE))
        recorded = base_model_name_or_path or getattr(lm.config, "_name_or_path", "") or ""
        (tmp / BASE_FILE).write_text(
            json.dumps({"base_model_name_or_path": str(recorded), "architecture": type(lm).__name__}, indent=2) + "\n"
        )
        if hasattr(base, "peft_config"):
            base.save_pretrained(str(tmp))
        elif finetuned_modules:
            save_file(finetuned_state_dict(lm, finetuned_modules), str(tmp / FINETUNED_FILE))
        if extra_files is not None:
            extra_files(tmp)


def finetuned_state_dict(lm, modules: Sequence[str]) -> dict[str, torch.Tensor]:
    """The weights of the modules named `modules` (suffixes) in `lm`'s own state-dict keys."""
    prefixes = [name for name, _ in lm.named_modules()
                if any(name == m or name.endswith(f".{m}") for m in modules)]
    state = {key: value.detach().to("cpu").contiguous() for key, value in lm.state_dict().items()
             if any(key.startswith(f"{prefix}.") for prefix in prefixes)}
    # Tied weights (lm_head = embed_tokens) share storage; safetensors wants each stored once.
    return {key: value.clone() for key, value in state.items()}


def load_finetuned_modules(lm, path: Path) -> None:
    file = path / FINETUNED_FILE
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise AdapterError(f"{file}: unreadable or truncated safetensors file ({err})") from err
    own = lm.state_dict()
    for key, value in tensors.items():
        if key not in own or tuple(own[key].shape) != tuple(value.shape):
            found = tuple(own[key].shape) if key in own else "no such weight"
            raise AdapterError(f"{file}: {key} {tuple(value.shape)} does not fit this base ({found}); "
                                  "pass the base checkpoint it was trained on")
    lm.load_state_dict(tensors, strict=False)


def read_memory(path: str | Path) -> torch.Tensor:
    """The saved initial memory (M, D) of a saved model directory."""
    file = Path(path) / MEMORY_FILE
    if not file.is_file():
        raise AdapterError(f"{file}: memory file missing; is {path} an rmt-scale model directory?")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise AdapterError(f"{file}: unreadable or truncated safetensors file ({err})") from err
    if "memory" not in tensors:
        raise AdapterError(f"{file}: has no 'memory' tensor")
    return tensors["memory"]


def recorded_base_path(path: str | Path) -> str | None:
    file = Path(path) / BASE_FILE
    if not file.is_file():
        return None
    try:
        recorded = json.loads(file.read_text()).get("base_model_name_or_path") or None
    except json.JSONDecodeError as err:
        raise AdapterError(f"{file}: not valid JSON ({err})") from err
    if recorded and not Path(recorded).expanduser().is_absolute() and (Path(path) / recorded).is_dir():
        return str(Path(path) / recorded)  # saved beside the adapter (an exported random base)
    return recorded


def load_memory_model(cls, path: str | Path, base=None, base_model_name_or_path: str | None = None,
                      is_trainable: bool = False, **base_kwargs):
    """Load a directory written by `save_memory_model`.

    Args:
        cls: RecurrentMemoryModel.
        path: The saved directory.
        base: The base causal LM; loaded from `base_model_name_or_path` or the recorded path
            when None.
        base_model_name_or_path: Overrides the recorded base path.
        is_trainable: Load the LoRA adapter trainable (for further fine-tuning).
        base_kwargs: Passed to `AutoModelForCausalLM.from_pretrained` (e.g. dtype).
    """
    path = Path(path)
    if not path.is_dir():
        raise AdapterError(f"{path}: no such model directory")
    try:
        config = RMTConfig.load(path / RMT_CONFIG_FILE)
    except ConfigError as err:
        raise AdapterError(str(err)) from err
    memory = read_memory(path)
    if base is None:
        source = base_model_name_or_path or recorded_base_path(path)
        if not source:
            raise AdapterError(
                f"{path}: no base model recorded; pass base= or base_model_name_or_path="
            )
        from transformers import AutoModelForCausalLM

        if not Path(source).is_dir():
            raise AdapterError(
                f"base checkpoint {source!r} recorded in {path} is not a local directory; pass "
                "base_model_name_or_path= pointing to it"
            )
        # trust_remote_code stays off: loading never runs code from a checkpoint.
        base = AutoModelForCausalLM.from_pretrained(source, trust_remote_code=False, **base_kwargs)
    if (path / ADAPTER_CONFIG_FILE).is_file() and not hasattr(base, "peft_config"):
        from peft import PeftModel

        try:
            base = PeftModel.from_pretrained(base, str(path), is_trainable=is_trainable)
        except (RuntimeError, ValueError, KeyError) as err:
            raise AdapterError(
                f"{path}: the LoRA adapter does not fit this base model ({str(err).splitlines()[0]}); "
                "pass the base checkpoint it was trained on"
            ) from err
    if (path / FINETUNED_FILE).is_file():
        load_finetuned_modules(unwrap_causal_lm(base), path)
    model = cls.wrap(base, config)
    if tuple(memory.shape) != tuple(model.memory.shape):
        raise AdapterError(
            f"{path}: saved memory has shape {tuple(memory.shape)} but this base needs "
            f"{tuple(model.memory.shape)} (num_mem_tokens, hidden_size); wrong base model?"
        )
    with torch.no_grad():
        model.memory.copy_(memory.to(model.memory.dtype))
    return model
