"""Build the model a run trains: base checkpoint (or a tiny random one) -> LoRA -> memory.

    base = load_base(config.model, dtype)           # local HF dir, optionally 4-bit (QLoRA)
    base = attach_lora(base, config.lora, ...)      # PEFT, BEFORE wrapping: PEFT save/load works
    model = RecurrentMemoryModel.wrap(base, rmt)    # memory: the only new parameter, trainable

Trainable afterwards: LoRA adapters, the memory, and the modules of `finetune.modules`; nothing
else. Gradient checkpointing of the base's layers is switched on here when asked; the segment
checkpointing of the recurrence is the core's `rmt.segment_checkpointing`.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from rmt_scale.config import RMTConfig
from rmt_scale.errors import AdapterError, ConfigError
from rmt_scale.model.loading import (
    describe_load_error,
    load_causal_lm,
    parse_dtype,
    resolve_model_dir,
)
from rmt_scale.model.recurrent import RecurrentMemoryModel
from rmt_scale.training.config import TrainConfig
from rmt_scale.training.model_config import (
    FinetuneConfig,
    LoraSettings,
    ModelConfig,
    RandomModelConfig,
)

logger = logging.getLogger(__name__)

# Precision names (fp32, bf16, fp16) -> the dtype names of rmt_scale.model.loading.DTYPES.
PRECISION_DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def model_dtype(model: ModelConfig, precision: str) -> torch.dtype:
    """The weights' dtype: model.dtype, or the resolved precision's when "auto"."""
    return parse_dtype(model.dtype, "model.dtype") or parse_dtype(PRECISION_DTYPE_NAMES[precision])


def base_hidden_size(model: ModelConfig) -> int:
    """The base model's width, read without loading weights: config.json of `model.path` (through
    AutoConfig) or the random spec. ZeRO bucket sizes in the DeepSpeed JSON scale with it."""
    if model.init == "random":
        return model.random.hidden_size
    check_base_path(model)
    from transformers import AutoConfig

    try:
        base_config = AutoConfig.from_pretrained(str(model.resolved_path()),
                                                 trust_remote_code=model.trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        why = describe_load_error(model.resolved_path(), err, model.trust_remote_code)
        raise ConfigError(f"model.path {model.resolved_path()}: unreadable config.json ({why})") from None
    size = getattr(base_config, "hidden_size", None)
    if not isinstance(size, int) or size <= 0:
        # Multimodal configs keep the language model's sizes in a sub-config.
        size = getattr(getattr(base_config, "text_config", None), "hidden_size", None)
    if not isinstance(size, int) or size <= 0:
        raise ConfigError(f"model.path {model.resolved_path()}: config.json has no hidden_size; "
                          "is it a decoder language model?")
    return size


def check_base_path(model: ModelConfig) -> None:
    """A clear one-line error when the base checkpoint directory is missing or incomplete."""
    if model.init != "pretrained":
        return
    # A directory, or the id of a model in the local Hugging Face cache (its snapshot directory).
    try:
        path = resolve_model_dir(model.path, "model.path", ConfigError)
    except ConfigError as err:
        raise ConfigError(f"{err} (`rmt-scale fetch-default` puts the default checkpoint in place)") from None
    if not (path / "config.json").is_file():
        raise ConfigError(f"model.path {path}: no config.json, not a Hugging Face checkpoint directory")


def random_base(spec: RandomModelConfig, dtype: torch.dtype) -> nn.Module:
    """A small random causal LM built in memory, identical for the same spec (seeded)."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    common = dict(vocab_size=spec.vocab_size, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if spec.arch == "gpt2":
        model_config = GPT2Config(n_embd=spec.hidden_size, n_layer=spec.num_layers, n_head=spec.num_heads,
                                  n_positions=spec.max_positions, resid_pdrop=0.0, embd_pdrop=0.0,
                                  attn_pdrop=0.0, **common)
        model_cls = GPT2LMHeadModel
    else:
        config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM),
                                 "mistral": (MistralConfig, MistralForCausalLM),
                                 "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[spec.arch]
        model_config = config_cls(hidden_size=spec.hidden_size,
                                  intermediate_size=spec.intermediate_size or 2 * spec.hidden_size,
                                  num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
                                  num_key_value_heads=spec.num_kv_heads,
                                  max_position_embeddings=spec.max_positions, **common)
    # A private RNG scope: the base depends on spec.seed only, not on what ran before.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = model_cls(model_config)
    return model.to(dtype)


def load_base(model: ModelConfig, dtype: torch.dtype, device: torch.device | None = None) -> nn.Module:
    """The base causal LM: a local checkpoint (optionally 4-bit) or a random one."""
    if model.init == "random":
        return random_base(model.random, dtype)
    check_base_path(model)
    kwargs: dict = {"dtype": dtype}
    if model.attn_implementation:
        kwargs["attn_implementation"] = model.attn_implementation
    if model.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
        # 4-bit weights are quantized as they load onto their device and cannot move afterwards.
        kwargs["device_map"] = {"": str(device or "cpu")}
    try:
        return load_causal_lm(model.resolved_path(), trust_remote_code=model.trust_remote_code, **kwargs)
    except AdapterError as err:  # the loader's message names the directory and the cause
        raise ConfigError(f"model.path: {err}") from None


def enable_gradient_checkpointing(base: nn.Module) -> None:
    """The base's own per-layer activation checkpointing (non-reentrant: frozen inputs are fine)."""
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ConfigError(f"model.gradient_checkpointing: {type(base).__name__} does not support it")
    enable = getattr(base, "activation_checkpointing_enable", None)  # the transformers >= 5.x name
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def attach_lora(base: nn.Module, lora: LoraSettings, finetune: FinetuneConfig, quantized: bool,
                gradient_checkpointing: bool) -> nn.Module:
    """Freeze the base and add what trains: LoRA adapters and/or fully trained modules."""
    if quantized:
        from peft import prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(
            base, use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    elif gradient_checkpointing:
        enable_gradient_checkpointing(base)
    if not lora.enabled:
        base.requires_grad_(False)
        if finetune.trains_everything():
            base.requires_grad_(True)
            return base
        matched = _unfreeze(base, finetune.modules)
        missing = sorted(set(finetune.modules) - matched)
        if missing:
            raise ConfigError(f"finetune.modules {missing} match no module of {type(base).__name__}")
        return base
    if finetune.trains_everything():
        raise ConfigError("finetune.modules=[all] is full fine-tuning; set lora.enabled=false with it")
    from peft import LoraConfig, get_peft_model

    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=list(lora.target_modules),
                             modules_to_save=list(finetune.modules) or None, task_type="CAUSAL_LM")
    try:
        return get_peft_model(base, peft_config)
    except ValueError as err:
        raise ConfigError(f"lora.target_modules {lora.target_modules}: {str(err).splitlines()[0]}") from None


def _unfreeze(base: nn.Module, names: list[str]) -> set[str]:
    matched = set()
    for module_name, module in base.named_modules():
        for name in names:
            if module_name == name or module_name.endswith(f".{name}"):
                module.requires_grad_(True)
                matched.add(name)
    return matched


def build_model(config: TrainConfig, precision: str, device: torch.device | None = None) -> RecurrentMemoryModel:
    """The memory model of a run, with exactly the configured parameters trainable.

    Adapter initialisation draws from a private RNG seeded with the run seed, so the same
    config always starts from the same weights on every rank.
    """
    dtype = model_dtype(config.model, precision)
    base = load_base(config.model, dtype, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        base = attach_lora(base, config.lora, config.finetune, config.model.load_in_4bit,
                           config.model.gradient_checkpointing)
    rmt = RMTConfig(**config.rmt.to_dict()) if not isinstance(config.rmt, RMTConfig) else config.rmt
    model = RecurrentMemoryModel.wrap(base, rmt)
    model.memory.requires_grad_(True)
    return model


def describe_trainable(model: nn.Module) -> tuple[int, int, list[str]]:
    """(trainable elements, all elements, kinds of trainable parameters) for the startup log."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    kinds = sorted({_kind(n) for n, _ in trainable})
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for _, p in trainable), total, kinds


def _kind(name: str) -> str:
    if name.endswith("memory"):
        return "memory"
    if "lora_" in name:
        return "lora"
    if ".modules_to_save." in name:
        return name.split(".modules_to_save.")[0].rsplit(".", 1)[-1]
    return name.rsplit(".", 2)[-2] if "." in name else name
