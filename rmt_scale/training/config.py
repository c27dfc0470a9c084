"""TrainConfig: everything a training run needs, read from YAML plus `key.sub=value` overrides.

One path in: `load_train_config(yaml_path, overrides)` reads the YAML, applies the overrides, and
builds nested dataclasses whose `__post_init__` checks each value. Unknown keys are errors that
list the valid ones; every error is a one-line `ConfigError`. `TrainConfig.to_yaml()` writes the
resolved config that goes into the output directory and every checkpoint.

Batch sizes have one source of truth: `batch` here. The DeepSpeed JSON leaves them "auto" and
`rmt_scale.distributed` fills them in (a number forced there that disagrees is an error).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rmt_scale.config import RMTConfig
from rmt_scale.errors import ConfigError
from rmt_scale.training.config_file import apply_override, build_dataclass, read_yaml

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


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
        path: Local directory of a Hugging Face checkpoint (config.json, weights, tokenizer).
            `~` is expanded. Required when `init` is "pretrained".
        init: "pretrained" loads `path`; "random" builds `random` in memory (no files needed).
        random: The architecture and sizes used when `init` is "random".
        dtype: Weights dtype: "auto" follows `precision` (bf16/fp16 on GPUs, fp32 on CPU).
        load_in_4bit: Load the frozen base in 4-bit NF4 (bitsandbytes, QLoRA). Needs LoRA and
            ZeRO stage 0-2 (ZeRO-3 cannot partition 4-bit weights).
        gradient_checkpointing: The base model's own per-layer activation checkpointing
            (independent of `rmt.segment_checkpointing`, which recomputes whole segments).
        attn_implementation: Passed to transformers ("sdpa", "eager", "flash_attention_2");
            None keeps the transformers default.
    """

    path: str | None = None
    init: str = "pretrained"
    random: RandomModelConfig = field(default_factory=RandomModelConfig)
    dtype: str = "auto"
    load_in_4bit: bool = False
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None

    def __post_init__(self) -> None:
        _check(self.init in ("pretrained", "random"),
               f"model.init must be 'pretrained' or 'random', got {self.init!r}")
        _check(self.init == "random" or bool(self.path),
               "model.path is required when model.init is 'pretrained' (a local checkpoint directory)")
        _check(self.dtype in ("auto", "float32", "bfloat16", "float16"),
               f"model.dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")

    def resolved_path(self) -> Path | None:
        return Path(self.path).expanduser() if self.path else None


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


@dataclass
class SyntheticDataConfig:
    """The built-in key-recall task (rmt_scale.data.synthetic.KeyRecallDataset).

    Attributes:
        key_length: Tokens in the key to recall.
        key_vocab: Keys are drawn from this many ids; chance accuracy is 1 / key_vocab.
    """

    key_length: int = 2
    key_vocab: int = 8


@dataclass
class BabilongDataConfig:
    """BABILong samples: a bAbI task hidden in noise text, built by rmt_scale.data.

    Attributes:
        task: bAbI task, "qa1" .. "qa20".
        tokenizer: Tokenizer directory; None uses `model.path`.
        babi_dir: Directory of the bAbI files; None uses the data module's default.
        noise_files: Text files used as noise; None uses the data module's default.
        hf_name: Hub dataset with the babi_qa schema, used when babi_dir is None (and cached
            locally); None with no babi_dir uses the built-in generator (qa1-qa3).
        split: bAbI split of the training samples.
        valid_split: bAbI split of the validation samples.
    """

    task: str = "qa1"
    tokenizer: str | None = None
    babi_dir: str | None = None
    noise_files: list[str] | None = None
    hf_name: str | None = None
    split: str = "train"
    valid_split: str = "validation"


@dataclass
class DataConfig:
    """Training data. A sample of a stage with n segments has n * rmt.segment_size tokens.

    Attributes:
        kind: "synthetic" (built-in key recall) or "babilong".
        num_samples: Training samples per length; the order is reshuffled every epoch.
        valid_samples: Validation samples per length (for evaluation and early advance).
        seed: Seed of the samples themselves; None uses the run seed.
        synthetic: Settings of the synthetic task.
        babilong: Settings of the BABILong task.
    """

    kind: str = "synthetic"
    num_samples: int = 1024
    valid_samples: int = 64
    seed: int | None = None
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    babilong: BabilongDataConfig = field(default_factory=BabilongDataConfig)

    def __post_init__(self) -> None:
        _check(self.kind in ("synthetic", "babilong"),
               f"data.kind must be 'synthetic' or 'babilong', got {self.kind!r}")
        _check(self.num_samples > 0, f"data.num_samples must be positive, got {self.num_samples}")
        _check(self.valid_samples >= 0, f"data.valid_samples must be >= 0, got {self.valid_samples}")


@dataclass
class AdvanceRule:
    """Leave a stage early once a validation metric is good enough.

    Attributes:
        metric: "accuracy" (labelled tokens predicted right, higher is better) or "loss".
        threshold: Advance when accuracy >= threshold (or loss <= threshold).
        min_steps: Never advance before this many steps of the stage.
    """

    metric: str = "accuracy"
    threshold: float = 0.9
    min_steps: int = 0

    def __post_init__(self) -> None:
        _check(self.metric in ("accuracy", "loss"),
               f"advance.metric must be 'accuracy' or 'loss', got {self.metric!r}")

    def reached(self, metrics: dict[str, float]) -> bool:
        value = metrics[self.metric]
        return value >= self.threshold if self.metric == "accuracy" else value <= self.threshold


@dataclass
class StageConfig:
    """One curriculum stage.

    Attributes:
        num_segments: Segments per sample (sequence length = num_segments * segment_size).
        steps: Optimizer steps in the stage. Exactly one of steps and tokens is set.
        tokens: Training tokens in the stage (global); the stage ends at the first step that
            reaches it.
        lr: Peak learning rate of the stage; None uses optimizer.lr.
        vary_n_segments: Draw each batch's number of segments uniformly from
            [min_segments, num_segments] (the RMT papers' vary_n_segments).
        min_segments: Lower end of the draw when vary_n_segments is on.
        advance: Optional early-advance rule checked at every evaluation.
    """

    num_segments: int = 1
    steps: int | None = None
    tokens: int | None = None
    lr: float | None = None
    vary_n_segments: bool = False
    min_segments: int = 1
    advance: AdvanceRule | None = None

    def __post_init__(self) -> None:
        _check(self.num_segments >= 1, f"stage num_segments must be >= 1, got {self.num_segments}")
        _check((self.steps is None) != (self.tokens is None),
               f"a stage needs exactly one of steps and tokens, got steps={self.steps} tokens={self.tokens}")
        _check(self.steps is None or self.steps > 0, f"stage steps must be positive, got {self.steps}")
        _check(self.tokens is None or self.tokens > 0, f"stage tokens must be positive, got {self.tokens}")
        _check(self.lr is None or self.lr > 0, f"stage lr must be positive, got {self.lr}")
        _check(1 <= self.min_segments <= self.num_segments,
               f"stage min_segments must be in [1, num_segments={self.num_segments}], got {self.min_segments}")


@dataclass
class CurriculumConfig:
    """Stages run in order, each on longer inputs.

    Attributes:
        stages: The stages; at least one.
        stages_per_launch: Stop after finishing this many stages in one launch (a checkpoint is
            always written at a stage end); the next launch with `resume=auto` continues with
            the next stage. None runs all remaining stages. 1 gives the one-job-per-stage pattern.
    """

    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig(num_segments=1, steps=100)])
    stages_per_launch: int | None = None

    def __post_init__(self) -> None:
        _check(len(self.stages) > 0, "curriculum.stages is empty; give at least one stage")
        _check(self.stages_per_launch is None or self.stages_per_launch > 0,
               f"curriculum.stages_per_launch must be positive or null, got {self.stages_per_launch}")


@dataclass
class BatchConfig:
    """Batch sizes (the only place they are set).

    train_batch_size = micro_batch_size * grad_accum * world_size. Give `grad_accum` or
    `global_batch_size` (neither: grad_accum 1); with `global_batch_size` the global batch stays
    the same when the number of ranks changes (grad_accum is derived), so a run resumed on other
    ranks continues the same training.

    Attributes:
        micro_batch_size: Samples per rank per forward pass.
        grad_accum: Micro-batches accumulated per optimizer step.
        global_batch_size: Samples per optimizer step over all ranks.
    """

    micro_batch_size: int = 1
    grad_accum: int | None = None
    global_batch_size: int | None = None

    def __post_init__(self) -> None:
        _check(self.micro_batch_size > 0, f"batch.micro_batch_size must be positive, got {self.micro_batch_size}")
        _check(self.grad_accum is None or self.global_batch_size is None,
               "give exactly one of batch.grad_accum and batch.global_batch_size")
        if self.global_batch_size is None and self.grad_accum is None:
            self.grad_accum = 1
        _check(self.global_batch_size is None or self.global_batch_size > 0,
               f"batch.global_batch_size must be positive, got {self.global_batch_size}")
        _check(self.grad_accum is None or self.grad_accum > 0,
               f"batch.grad_accum must be positive, got {self.grad_accum}")

    def resolve(self, world_size: int) -> tuple[int, int, int]:
        """(micro_batch_size, grad_accum, train_batch_size) for `world_size` ranks."""
        if self.grad_accum is not None:
            return self.micro_batch_size, self.grad_accum, self.micro_batch_size * self.grad_accum * world_size
        per_step = self.micro_batch_size * world_size
        _check(self.global_batch_size % per_step == 0,
               f"batch.global_batch_size {self.global_batch_size} is not a multiple of micro_batch_size "
               f"{self.micro_batch_size} x {world_size} ranks")
        return self.micro_batch_size, self.global_batch_size // per_step, self.global_batch_size


@dataclass
class OptimizerConfig:
    """AdamW on the trainable parameters.

    Attributes:
        lr: Peak learning rate (a stage can set its own).
        weight_decay: Decoupled weight decay.
        betas: Adam betas.
        eps: Adam epsilon.
        grad_clip: Clip the global gradient norm to this; 0 turns clipping off.
    """

    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        _check(self.lr > 0, f"optimizer.lr must be positive, got {self.lr}")
        _check(len(self.betas) == 2, f"optimizer.betas must be two numbers, got {self.betas}")
        _check(self.grad_clip >= 0, f"optimizer.grad_clip must be >= 0, got {self.grad_clip}")


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, restarted at every stage (as in the RMT curriculum).

    Attributes:
        kind: "constant", "linear" or "cosine" decay after warmup.
        warmup_steps: Linear warmup steps at the start of each stage.
        min_lr_ratio: Decay ends at this fraction of the stage's peak lr.
    """

    kind: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        _check(self.kind in ("constant", "linear", "cosine"),
               f"schedule.kind must be constant, linear or cosine, got {self.kind!r}")
        _check(self.warmup_steps >= 0, f"schedule.warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(0.0 <= self.min_lr_ratio <= 1.0, f"schedule.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass
class EvalConfig:
    """Validation on held-out samples of the current stage's length.

    Attributes:
        every_steps: Evaluate every this many steps (and at every stage end); 0 only at stage ends.
        at_stage_end: Evaluate at the end of every stage.
    """

    every_steps: int = 0
    at_stage_end: bool = True


@dataclass
class CheckpointConfig:
    """Periodic checkpoints (always also one at every stage end and at the end of a launch).

    Attributes:
        every_steps: Save every this many optimizer steps; 0 saves only at stage ends.
        keep_last: Complete checkpoints kept (older ones are deleted); 0 keeps all.
    """

    every_steps: int = 0
    keep_last: int = 2

    def __post_init__(self) -> None:
        _check(self.every_steps >= 0, f"checkpoint.every_steps must be >= 0, got {self.every_steps}")
        _check(self.keep_last >= 0, f"checkpoint.keep_last must be >= 0, got {self.keep_last}")


@dataclass
class LoggingConfig:
    """What rank 0 reports.

    Attributes:
        every_steps: Write metrics every this many steps.
        progress_bar: Show a tqdm bar (stage, step, loss, tokens/s) on rank 0.
        tensorboard: Write TensorBoard event files to output_dir/tensorboard.
        wandb: Also log to Weights & Biases (when installed).
        wandb_project: W&B project name.
        level: Python logging level of rank 0.
    """

    every_steps: int = 1
    progress_bar: bool = True
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "rmt-scale"
    level: str = "info"

    def __post_init__(self) -> None:
        _check(self.every_steps > 0, f"logging.every_steps must be positive, got {self.every_steps}")


@dataclass
class TrainConfig:
    """A training run.

    Attributes:
        model: The base model.
        rmt: Recurrent memory settings (rmt_scale.RMTConfig).
        lora: LoRA adapters.
        finetune: Base modules trained in full.
        data: Training and validation data.
        curriculum: Stages of increasing length.
        batch: Batch sizes.
        optimizer: AdamW settings.
        schedule: Learning-rate schedule.
        eval: Validation.
        checkpoint: Periodic checkpoints.
        logging: Metrics, progress bar, TensorBoard, W&B.
        deepspeed: DeepSpeed JSON (ds_configs/*.json); relative paths are tried from the working
            directory, then from the repository root.
        precision: "auto" (bf16 on GPUs that support it, else fp16; fp32 on CPU), fp32, bf16, fp16.
        output_dir: Where the run writes config.yaml, metrics.jsonl, tensorboard/, checkpoints/.
        seed: Seed of data order, adapter initialisation and dropout.
        resume: "auto" continues from the newest complete checkpoint in output_dir (or starts
            fresh), "none" starts fresh, anything else is a checkpoint directory to resume from.
        dist_timeout_minutes: Timeout of collective operations, so a dead rank cannot hang the rest.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    rmt: RMTConfig = field(default_factory=RMTConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    deepspeed: str = "ds_configs/zero2.json"
    precision: str = "auto"
    output_dir: str = "runs/default"
    seed: int = 0
    resume: str = "auto"
    dist_timeout_minutes: int = 30

    def __post_init__(self) -> None:
        _check(self.precision in PRECISIONS, f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        _check(bool(self.output_dir), "output_dir must be set")
        _check(bool(self.resume), "resume must be 'auto', 'none' or a checkpoint directory")
        if self.model.load_in_4bit:
            _check(self.lora.enabled, "model.load_in_4bit needs lora.enabled=true (4-bit weights cannot train)")
        if not self.lora.enabled:
            _check(len(self.finetune.modules) > 0,
                   "nothing to train besides memory: set lora.enabled=true or list finetune.modules")
        if self.data.valid_samples == 0:
            ruled = [i for i, stage in enumerate(self.curriculum.stages) if stage.advance is not None]
            _check(not ruled, f"curriculum.stages {ruled} advance on a validation metric but "
                              "data.valid_samples is 0")
        if self.model.init == "random":
            limit = self.model.random.max_positions
            _check(self.rmt.positions_per_segment() <= limit,
                   f"2*rmt.num_mem_tokens + rmt.segment_size = {self.rmt.positions_per_segment()} exceeds "
                   f"model.random.max_positions={limit}")

    def data_seed(self) -> int:
        return self.seed if self.data.seed is None else self.data.seed

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())


def load_train_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """YAML file (optional) -> overrides -> validated TrainConfig."""
    values = read_yaml(path) if path is not None else {}
    # Shipped recipes give only what differs from the defaults; stages given as a list replace the
    # default list, so index overrides apply to what the YAML says.
    for override in overrides:
        apply_override(values, override)
    return build_dataclass(TrainConfig, values)


def config_from_dict(values: dict) -> TrainConfig:
    return build_dataclass(TrainConfig, values)
