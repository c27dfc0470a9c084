"""The `model`, `lora` and `finetune` sections of the training config: what the run trains."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rmt_scale.model.loading import cached_model_dir, model_id_of
from rmt_scale.training.config_file import check as _check


@dataclass
class RandomModelConfig:
    """A small randomly initialised base model, built in memory (tests and the tiny recipe).

    Attributes:
        arch: One of llama, mistral, qwen2, gpt2.
        vocab_size: Vocabulary size; ids 0..3 are pad, bos, eos and the synthetic query marker.
        hidden_size: Model width.
        num_layers: Decoder layers.
        num_heads: Attention heads.
        num_kv_heads: Key/value heads (grouped-query attention); ignored for gpt2.
        intermediate_size: MLP width; None means 2 * hidden_size.
        max_positions: Largest position the model is built for.
        seed: Seed of the weight initialisation; separate from the run seed so that `seed=N`
            changes the data order and adapters, never the frozen base.
    """

    arch: str = "llama"
    vocab_size: int = 64
    hidden_size: int = 32
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int | None = None
    max_positions: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.arch in ("llama", "mistral", "qwen2", "gpt2"),
               f"model.random.arch must be llama, mistral, qwen2 or gpt2, got {self.arch!r}")
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "max_positions"):
            _check(getattr(self, name) > 0, f"model.random.{name} must be positive, got {getattr(self, name)}")
        _check(self.hidden_size % self.num_heads == 0,
               f"model.random.hidden_size ({self.hidden_size}) must be a multiple of num_heads ({self.num_heads})")


@dataclass
class ModelConfig:
    """The base model.

    Attributes:
        path: Local directory of a Hugging Face checkpoint (config.json, weights, tokenizer),
            `~` expanded, or the id of a model in the local Hugging Face cache
            (`HuggingFaceTB/SmolLM2-135M-Instruct`: read offline from its snapshot; adapters
            record the id). Required when `init` is "pretrained".
        init: "pretrained" loads `path`; "random" builds `random` in memory (no files needed).
        random: The architecture and sizes used when `init` is "random".
        dtype: Weights dtype: "auto" follows `precision` (bf16/fp16 on GPUs, fp32 on CPU).
        load_in_4bit: Load the frozen base in 4-bit NF4 (bitsandbytes, QLoRA). Needs LoRA and
            ZeRO stage 0-2 (ZeRO-3 cannot partition 4-bit weights).
        gradient_checkpointing: The base model's own per-layer activation checkpointing
            (independent of `rmt.segment_checkpointing`, which recomputes whole segments).
        attn_implementation: Passed to transformers ("sdpa", "eager", "flash_attention_2");
            None keeps the transformers default.
        trust_remote_code: Let transformers run Python code shipped in the checkpoint directory
            (architectures it does not know). Off by default: that code runs with your rights.
    """

    path: str | None = None
    init: str = "pretrained"
    random: RandomModelConfig = field(default_factory=RandomModelConfig)
    dtype: str = "auto"
    load_in_4bit: bool = False
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        _check(self.init in ("pretrained", "random"),
               f"model.init must be 'pretrained' or 'random', got {self.init!r}")
        _check(self.init == "random" or bool(self.path),
               "model.path is required when model.init is 'pretrained' (a local checkpoint directory)")
        _check(self.dtype in ("auto", "float32", "bfloat16", "float16"),
               f"model.dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")

    def resolved_path(self) -> Path | None:
        """The checkpoint directory: `path` itself, or the local snapshot of a Hub model id."""
        if not self.path:
            return None
        path = Path(self.path).expanduser()
        return path if path.exists() else (cached_model_dir(self.path) or path)

    def model_id(self) -> str | None:
        """The Hub model id `path` names (a model in the local cache, not a directory), else None."""
        return model_id_of(self.path) if self.init == "pretrained" else None


@dataclass
class LoraSettings:
    """LoRA adapters (PEFT), attached to the base before it is wrapped with memory.

    Attributes:
        enabled: Train LoRA adapters; false means full fine-tuning of `finetune.modules`.
        r: Adapter rank.
        alpha: Scaling numerator (the update is scaled by alpha / r).
        dropout: Dropout on the adapter input.
        target_modules: Module names (suffixes) that get adapters, e.g. q_proj, v_proj; for
            gpt2 use c_attn.
    """

    enabled: bool = True
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    def __post_init__(self) -> None:
        _check(self.r > 0, f"lora.r must be positive, got {self.r}")
        _check(0.0 <= self.dropout < 1.0, f"lora.dropout must be in [0, 1), got {self.dropout}")
        _check(not self.enabled or len(self.target_modules) > 0,
               "lora.target_modules is empty; name the modules that get adapters or set lora.enabled=false")


@dataclass
class FinetuneConfig:
    """Modules trained in full (besides LoRA and memory).

    Attributes:
        modules: Module names (suffixes, e.g. lm_head, embed_tokens) whose weights all train.
            With LoRA they become PEFT `modules_to_save`; without LoRA they are the only base
            weights that train. "all" (alone) trains the whole base (full fine-tuning).
    """

    modules: list[str] = field(default_factory=list)

    def trains_everything(self) -> bool:
        return self.modules == ["all"]
