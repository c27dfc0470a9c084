"""The adapter format: PEFT adapter (if any) + memory + RMT config, written and read as pieces.

Directory layout written by `RecurrentMemoryModel.save_pretrained(path)` (and `rmt-scale export`)::

    path/
      rmt_config.json            RMTConfig
      memory.safetensors         {"memory": (M, D)}
      rmt_base.json              {"base_model_name_or_path": ...}: where the base came from: a
                                 Hub model id (looked up in the local cache), a directory, or a
                                 path relative to this directory (e.g. "base")
      adapter_config.json        } written by PEFT itself when the base is a PeftModel, so
      adapter_model.safetensors  } plain `PeftModel.from_pretrained(base, path)` loads it
      finetuned_modules.safetensors  base weights trained in full without LoRA (only when asked:
                                 `finetuned_modules=`), keyed like the base's own state dict

This module knows the files, not the model class: `write_adapter` takes the RMT config, the memory
tensor and the base (with its PEFT adapter), `read_adapter` gives them back with the base loaded
and the adapter attached, and `RecurrentMemoryModel` builds itself from them.

Everything is written to a temporary sibling directory first and renamed into place, so an
interrupted save never leaves a half-written directory at `path`. Nothing is unpickled on load.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from rmt_scale.config import RMTConfig
from rmt_scale.errors import AdapterError, ConfigError, first_line
from rmt_scale.model.loading import (
    cached_model_dir,
    hub_cache_dir,
    load_causal_lm,
    models_home,
    portable_model_name,
)
from rmt_scale.model.memory import unwrap_causal_lm
from rmt_scale.model.outputs import atomic_directory

RMT_CONFIG_FILE = "rmt_config.json"
MEMORY_FILE = "memory.safetensors"
BASE_FILE = "rmt_base.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
FINETUNED_FILE = "finetuned_modules.safetensors"


@dataclass
class SavedModel:
    """What an adapter directory holds, loaded.

    Attributes:
        config: The RMT config.
        memory: The trained initial memory, (num_mem_tokens, hidden_size), checked finite.
        base: The base causal LM with the directory's LoRA adapter (a PeftModel) and fine-tuned
            modules loaded onto it.
    """

    config: RMTConfig
    memory: torch.Tensor
    base: nn.Module


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


# --- writing ----------------------------------------------------------------------------------


def write_adapter(path: str | Path, config: RMTConfig, memory: torch.Tensor, base: nn.Module,
                  base_model_name_or_path: str | None = None,
                  extra_files: Callable[[Path], None] | None = None,
                  finetuned_modules: Sequence[str] = ()) -> None:
    """Write an adapter directory at `path` atomically (replacing what is there).

    Args:
        path: Output directory.
        config: The RMT config.
        memory: The initial memory, (num_mem_tokens, hidden_size).
        base: The base causal LM; its PEFT adapter is saved when it is a PeftModel.
        base_model_name_or_path: Where the base checkpoint lives; defaults to what the base's
            config records.
        extra_files: Called with the temporary directory to add files (tokenizer, model card)
            before it is moved into place.
        finetuned_modules: Module names (suffixes, e.g. lm_head) of a base without LoRA whose
            weights were trained in full; saved to finetuned_modules.safetensors. With LoRA,
            PEFT's modules_to_save already holds them.
    """
    lm = unwrap_causal_lm(base)
    with atomic_directory(path) as tmp:
        config.save(tmp / RMT_CONFIG_FILE)
        save_file({"memory": memory.detach().to("cpu").contiguous()}, str(tmp / MEMORY_FILE))
        recorded = base_model_name_or_path or getattr(lm.config, "_name_or_path", "") or ""
        # A base from the local Hub cache or rmt-scale's models home is recorded by its id or name,
        # not by this machine's path.
        if recorded:
            recorded = portable_model_name(recorded) or recorded
        (tmp / BASE_FILE).write_text(
            json.dumps({"base_model_name_or_path": str(recorded), "architecture": type(lm).__name__}, indent=2) + "\n"
        )
        if hasattr(base, "peft_config"):
            base.save_pretrained(str(tmp))
        elif finetuned_modules:
            save_file(finetuned_state_dict(lm, finetuned_modules), str(tmp / FINETUNED_FILE))
        if extra_files is not None:
            extra_files(tmp)


def save_memory_model(model, path: str | Path, **kwargs) -> None:
    """`write_adapter` for an object with `config`, `memory` and `base` (a RecurrentMemoryModel);
    the export's entry point, equal to `model.save_pretrained(path, **kwargs)`."""
    write_adapter(path, model.config, model.memory, model.base, **kwargs)


def finetuned_state_dict(lm, modules: Sequence[str]) -> dict[str, torch.Tensor]:
    """The weights of the modules named `modules` (suffixes) in `lm`'s own state-dict keys."""
    prefixes = [name for name, _ in lm.named_modules()
                if any(name == m or name.endswith(f".{m}") for m in modules)]
    state = {key: value.detach().to("cpu").contiguous() for key, value in lm.state_dict().items()
             if any(key.startswith(f"{prefix}.") for prefix in prefixes)}
    # Tied weights (lm_head = embed_tokens) share storage; safetensors wants each stored once.
    return {key: value.clone() for key, value in state.items()}


# --- reading ----------------------------------------------------------------------------------


def _load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise AdapterError(f"{file}: unreadable or truncated safetensors file ({err}); "
                           "export the adapter again") from err


def _read_json_object(file: Path) -> dict:
    try:
        values = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise AdapterError(f"{file}: not valid JSON ({err}); export the adapter again") from err
    if not isinstance(values, dict):
        raise AdapterError(f"{file}: expected a JSON object; export the adapter again")
    return values


def read_rmt_config(path: str | Path) -> RMTConfig:
    """The RMT config of an adapter directory."""
    try:
        return RMTConfig.load(Path(path) / RMT_CONFIG_FILE)
    except ConfigError as err:
        raise AdapterError(str(err)) from err


def load_finetuned_modules(lm, path: Path) -> None:
    file = path / FINETUNED_FILE
    tensors = _load_safetensors(file)
    own = lm.state_dict()
    for key, value in tensors.items():
        if key not in own or tuple(own[key].shape) != tuple(value.shape):
            found = tuple(own[key].shape) if key in own else "no such weight"
            raise AdapterError(f"{file}: {key} {tuple(value.shape)} does not fit this base ({found}); "
                               "pass the base checkpoint it was trained on")
    lm.load_state_dict(tensors, strict=False)


def read_memory(path: str | Path) -> torch.Tensor:
    """The saved initial memory (M, D) of an adapter directory, checked to be finite."""
    file = Path(path) / MEMORY_FILE
    if not file.is_file():
        raise AdapterError(f"{file}: memory file missing; is {path} an rmt-scale model directory?")
    memory = _load_safetensors(file).get("memory")
    if memory is None:
        raise AdapterError(f"{file}: has no 'memory' tensor; export the adapter again")
    if memory.dim() != 2 or not memory.is_floating_point():
        raise AdapterError(f"{file}: 'memory' must be a (num_mem_tokens, hidden_size) float tensor, "
                           f"got {memory.dtype} of shape {tuple(memory.shape)}")
    if not bool(torch.isfinite(memory).all()):
        raise AdapterError(f"{file}: the memory holds NaN or inf values (training diverged?); "
                           "export a checkpoint from before the loss went non-finite")
    return memory


def recorded_base_path(path: str | Path) -> str | None:
    """The base checkpoint an adapter directory records, relative paths resolved; None if none."""
    file = Path(path) / BASE_FILE
    if not file.is_file():
        return None
    recorded = _read_json_object(file).get("base_model_name_or_path") or None
    if recorded is not None and not isinstance(recorded, str):
        raise AdapterError(f"{file}: base_model_name_or_path must be a path or a model id (a string), "
                           f"got {recorded!r}; fix it or pass --base")
    if recorded and not Path(recorded).expanduser().is_absolute() and (Path(path) / recorded).is_dir():
        return str(Path(path) / recorded)  # saved beside the adapter (an exported random base)
    return recorded


def _load_base(path: Path, base_model_name_or_path: str | None, base_kwargs: dict) -> nn.Module:
    source = base_model_name_or_path or recorded_base_path(path)
    if not source:
        raise AdapterError(f"{path}: no base model recorded; pass base= or base_model_name_or_path=")
    if not Path(source).expanduser().is_dir() and cached_model_dir(source) is None:
        raise AdapterError(
            f"base checkpoint {source!r} recorded in {path} is neither a local directory nor a model "
            f"id in the local Hugging Face cache ({hub_cache_dir()}) nor a model name in {models_home()} "
            "(`rmt-scale fetch-default` puts SmolLM2-135M-Instruct there); pass --base "
            "(base_model_name_or_path= in Python) pointing to it"
        )
    return load_causal_lm(source, **base_kwargs)


def read_lora_config(path: Path):
    """The PEFT config of an adapter directory (None without one), its weights file checked to
    be there: what is wrong with the adapter is said before a base is loaded or blamed."""
    config_file, weights_file = path / ADAPTER_CONFIG_FILE, path / ADAPTER_WEIGHTS_FILE
    if not config_file.is_file():
        return None
    values = _read_json_object(config_file)
    if "peft_type" not in values:
        raise AdapterError(f"{config_file}: not a PEFT adapter config (no peft_type); export the adapter again")
    if not weights_file.is_file():
        raise AdapterError(f"{weights_file}: LoRA weights missing beside {ADAPTER_CONFIG_FILE}; "
                           "export the adapter again")
    try:  # the header only: a truncated or foreign file is named before a base is loaded
        with safe_open(str(weights_file), "pt"):
            pass
    except (SafetensorError, OSError) as err:
        raise AdapterError(f"{weights_file}: unreadable or truncated safetensors file ({err}); "
                           "export the adapter again") from err
    from peft import PeftConfig  # after the cheap checks: importing PEFT takes seconds

    try:
        peft_config = PeftConfig.from_pretrained(str(path))
    except (ValueError, TypeError, KeyError) as err:
        raise AdapterError(f"{config_file}: this PEFT version cannot read the adapter config "
                           f"({first_line(err)}); export the adapter again") from err
    _check_field_types(config_file, values, type(peft_config))
    return peft_config


# PEFT computes with its numbers as floats (lora_alpha / r), so an int field holding 16.0 works and
# is accepted; what fails deep inside the layers is a string, a list or an object in its place.
_SIMPLE_TYPES = {int: "a number", float: "a number", bool: "true or false", str: "a string"}


def _check_field_types(file: Path, values: dict, config_class: type) -> None:
    """The plain fields (int, float, bool, str) of a PEFT config hold values of their type.

    PEFT builds its config without checking types, so `"r": "eight"` would fail deep inside the
    LoRA layers, after the base is loaded, with a TypeError that names neither file nor key.
    """
    import typing

    try:
        hints = typing.get_type_hints(config_class)
    except (NameError, TypeError):  # annotations this Python cannot resolve: PEFT checks the rest
        return
    for key, value in values.items():
        kind = hints.get(key)
        options = [o for o in typing.get_args(kind) if o is not type(None)] if typing.get_args(kind) else [kind]
        if value is None or len(options) != 1 or options[0] not in _SIMPLE_TYPES:
            continue
        kind = options[0]
        fits = (isinstance(value, bool) if kind is bool else isinstance(value, str) if kind is str
                else isinstance(value, (int, float)) and not isinstance(value, bool))
        if not fits:
            raise AdapterError(f"{file}: {key} must be {_SIMPLE_TYPES[kind]}, got {value!r}; "
                               "export the adapter again")


def _attach_lora(base: nn.Module, path: Path, peft_config, is_trainable: bool) -> nn.Module:
    """`base` with the directory's LoRA adapter."""
    from peft import PeftModel

    weights_file = path / ADAPTER_WEIGHTS_FILE
    try:
        return PeftModel.from_pretrained(base, str(path), config=peft_config, is_trainable=is_trainable)
    except SafetensorError as err:
        raise AdapterError(f"{weights_file}: unreadable or truncated safetensors file ({err}); "
                           "export the adapter again") from err
    except (RuntimeError, ValueError, KeyError) as err:
        raise AdapterError(
            f"{path}: the LoRA adapter does not fit this base model ({first_line(err)}); "
            "pass the base checkpoint it was trained on"
        ) from err


def read_adapter(path: str | Path, base: nn.Module | None = None,
                 base_model_name_or_path: str | None = None, is_trainable: bool = False,
                 **base_kwargs) -> SavedModel:
    """Read a directory written by `write_adapter`, base included.

    Args:
        path: The adapter directory.
        base: The base causal LM; loaded from `base_model_name_or_path` or the recorded path
            when None.
        base_model_name_or_path: Overrides the recorded base path.
        is_trainable: Load the LoRA adapter trainable (for further fine-tuning).
        base_kwargs: Passed to `AutoModelForCausalLM.from_pretrained` (e.g. dtype).

    Raises:
        AdapterError: A missing, partial or corrupt directory, or a base it does not fit.
    """
    path = Path(path)
    if not path.is_dir():
        raise AdapterError(f"{path}: no such model directory")
    config = read_rmt_config(path)
    memory = read_memory(path)
    peft_config = read_lora_config(path)
    if base is None:
        base = _load_base(path, base_model_name_or_path, base_kwargs)
    if peft_config is not None and not hasattr(base, "peft_config"):
        base = _attach_lora(base, path, peft_config, is_trainable)
    if (path / FINETUNED_FILE).is_file():
        load_finetuned_modules(unwrap_causal_lm(base), path)
    embeddings = getattr(unwrap_causal_lm(base), "get_input_embeddings", None)
    if callable(embeddings):  # anything else is refused, with its reason, when it is wrapped
        expected = (config.num_mem_tokens, embeddings().weight.shape[-1])
        if tuple(memory.shape) != expected:
            raise AdapterError(
                f"{path}: saved memory has shape {tuple(memory.shape)} but this base needs "
                f"{expected} (num_mem_tokens, hidden_size); wrong base model?"
            )
    return SavedModel(config, memory, base)
