"""`rmt-scale merge`: fold the LoRA adapter into the base weights, keep the memory beside them.

    MERGED_DIR/
      config.json, model.safetensors, ...   the merged base (save_pretrained, safetensors)
      memory.safetensors, rmt_config.json   as in the adapter directory
      rmt_base.json                         "." : the base is this directory itself
      tokenizer files, README.md            copied from the adapter directory, card amended

So `RecurrentMemoryModel.from_pretrained(MERGED_DIR)` works with no adapter and no other base, and
plain transformers can load MERGED_DIR as a causal LM (without the memory). The merge runs in fp32
and the result is stored in the base's own dtype unless `dtype` says otherwise.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
import yaml

from rmt_scale.errors import AdapterError
from rmt_scale.export.adapter import CARD, TRAINING_CONFIG
from rmt_scale.model.loading import (
    DTYPES,
    TOKENIZER_FILES,
    cached_model_dir,
    describe_load_error,
    load_causal_lm,
    parse_dtype,
)
from rmt_scale.model.outputs import refuse_to_replace
from rmt_scale.model.saving import (
    ADAPTER_CONFIG_FILE,
    forget_quantization,
    read_adapter,
    recorded_base_path,
    write_adapter,
)

logger = logging.getLogger(__name__)


def merge_adapter(adapter: str | Path, out: str | Path, base_path: str | None = None,
                  dtype: str = "auto", trust_remote_code: bool = False) -> Path:
    """Merge the adapter directory `adapter` into its base and write the result to `out`.

    Args:
        adapter: A directory written by `rmt-scale export` (or `save_pretrained` with LoRA).
        out: The merged model directory (replaced atomically).
        base_path: The base checkpoint; default: the path recorded in the adapter directory.
        dtype: float32, bfloat16, float16, or auto (the base checkpoint's own dtype).
        trust_remote_code: Run Python code shipped in the base checkpoint (an architecture
            transformers does not know); only on the user's explicit request.

    Raises:
        AdapterError: A missing or unreadable adapter, memory or base, or a base that does
            not fit the adapter. Nothing is written then.
        InputError: `out` is or holds the adapter or the base: replacing it would delete them.
    """
    from transformers import AutoConfig

    adapter = Path(adapter)
    if not adapter.is_dir():
        raise AdapterError(f"{adapter}: no such adapter directory")
    if not (adapter / ADAPTER_CONFIG_FILE).is_file():
        raise AdapterError(f"{adapter}: no {ADAPTER_CONFIG_FILE}; not a LoRA adapter directory")
    source = base_path or recorded_base_path(adapter)
    # A model id in the local Hugging Face cache reads from its snapshot directory.
    local = None if not source else (
        Path(source).expanduser() if Path(source).expanduser().is_dir() else cached_model_dir(source))
    if local is None:
        raise AdapterError(f"{adapter}: base checkpoint {source!r} is not a local directory or a model id "
                           "in the local Hugging Face cache; pass --base")
    source = str(local)
    refuse_to_replace(out, overwrite=True, inputs=[adapter, source])
    try:
        base_config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise AdapterError(f"{source}: not a Hugging Face checkpoint "
                           f"({describe_load_error(source, err, trust_remote_code)})") from None
    kwargs = {"dtype": torch.float32}
    quantization = getattr(base_config, "quantization_config", None)
    if quantization is not None:
        # A 4-bit (or 8-bit) checkpoint cannot take a LoRA delta exactly; merge into its
        # dequantized weights, which is what the quantized model computed with.
        logger.warning("the base %s is quantized (%s): dequantizing it for merging; the merged model "
                       "is stored in full precision", source, _quant_method(quantization))
        kwargs = {"device_map": {"": "cuda" if torch.cuda.is_available() else "cpu"}}
    if _trained_in_4bit(adapter):
        logger.info("the adapter was trained on a 4-bit quantized base; it is merged into the "
                    "full-precision weights of %s", source)
    base = load_causal_lm(source, trust_remote_code=trust_remote_code, **kwargs)
    if quantization is not None:
        base = base.dequantize().to(device="cpu", dtype=torch.float32)
        forget_quantization(base)
    saved = read_adapter(adapter, base=base)
    merged = saved.base.merge_and_unload()
    target = _target_dtype(dtype, base_config, quantization is not None)
    merged.to(target)

    def extra_files(tmp: Path) -> None:
        merged.save_pretrained(str(tmp))
        for name in TOKENIZER_FILES:
            if (adapter / name).is_file() and not (tmp / name).exists():
                shutil.copyfile(adapter / name, tmp / name)
        for name in (TRAINING_CONFIG, "trainer_state.json", "eval_results.json"):
            if (adapter / name).is_file():
                shutil.copyfile(adapter / name, tmp / name)
        card = (adapter / CARD).read_text() if (adapter / CARD).is_file() else "# Recurrent memory model\n"
        (tmp / CARD).write_text(_merged_card(card, adapter, source, target))

    write_adapter(out, saved.config, saved.memory.to(target), merged, base_model_name_or_path=".",
                  extra_files=extra_files)
    logger.info("merged %s into %s: %s", adapter, source, out)
    return Path(out)


def _target_dtype(dtype: str, base_config, quantized: bool) -> torch.dtype:
    if dtype != "auto":
        return parse_dtype(dtype, "--dtype")
    if quantized:
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    stored = getattr(base_config, "dtype", None) or getattr(base_config, "torch_dtype", None)
    if isinstance(stored, torch.dtype):
        return stored
    return DTYPES.get(str(stored).replace("torch.", ""), torch.float32)


def _quant_method(quantization) -> str:
    if isinstance(quantization, dict):
        return str(quantization.get("quant_method", "quantized"))
    return str(getattr(quantization, "quant_method", "quantized"))


def _trained_in_4bit(adapter: Path) -> bool:
    file = adapter / TRAINING_CONFIG
    if not file.is_file():
        return False
    try:
        values = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError:
        return False
    return bool(values.get("model", {}).get("load_in_4bit"))


def _merged_card(card: str, adapter: Path, base: str, dtype: torch.dtype) -> str:
    note = (f"\n## Merged\n\nThe LoRA adapter of `{adapter}` is merged into the weights of `{base}` "
            f"(stored as {str(dtype).replace('torch.', '')}); this directory is the base itself "
            "(`rmt_base.json` points to `.`). Load with `RecurrentMemoryModel.from_pretrained(THIS_DIR)`, "
            "or as a plain causal LM without memory with `AutoModelForCausalLM.from_pretrained(THIS_DIR)`.\n")
    card = card.replace("library_name: peft", "library_name: transformers")
    return card.rstrip("\n") + "\n" + note
