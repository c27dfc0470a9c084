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
from rmt_scale.resources import find_recipe
from rmt_scale.training.config_file import apply_override, build_dataclass, read_yaml
from rmt_scale.training.config_file import check as _check
from rmt_scale.training.curriculum_config import (
    AdvanceRule,
    CurriculumConfig,
    ScheduleConfig,
    StageConfig,
)
from rmt_scale.training.data_config import (
    BabilongDataConfig,
    DataConfig,
    QADataConfig,
    SyntheticDataConfig,
    TextDataConfig,
)
from rmt_scale.training.model_config import (
    FinetuneConfig,
    LoraSettings,
    ModelConfig,
    RandomModelConfig,
)

# The section classes live in their own modules; they are importable from here too.
__all__ = [
    "AdvanceRule", "BabilongDataConfig", "BatchConfig", "CheckpointConfig", "CurriculumConfig",
    "DataConfig", "EvalConfig", "FinetuneConfig", "LoggingConfig", "LoraSettings", "ModelConfig",
    "OptimizerConfig", "QADataConfig", "RandomModelConfig", "ScheduleConfig", "StageConfig",
    "SyntheticDataConfig", "TextDataConfig", "TrainConfig", "apply_override", "config_from_dict",
    "load_train_config",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NONFINITE = ("stop", "skip")


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
        deepspeed: DeepSpeed JSON: a shipped one by name (zero1, zero2, zero2_offload, zero3,
            zero3_offload; `rmt-scale configs ls`) or a file path (relative: from the working
            directory). Its batch fields stay "auto": `batch` fills them.
        precision: "auto" (bf16 on GPUs that support it, else fp16; fp32 on CPU), fp32, bf16, fp16.
        output_dir: Where the run writes config.yaml, metrics.jsonl, tensorboard/, checkpoints/.
        seed: Seed of data order, adapter initialisation and dropout.
        resume: "auto" continues from the newest complete checkpoint in output_dir (or starts
            fresh), "none" starts fresh, anything else is a checkpoint directory to resume from.
        resume_allow_changes: Resume even though the model, rmt, lora or data section differs
            from the checkpoint's config.yaml (refused by default: the checkpoint's weights and
            data position belong to the config that wrote them).
        dist_timeout_minutes: How long a collective operation waits for the other ranks before
            every rank still running stops with an error, so a dead or stopped rank cannot hang the
            rest (fractions allowed: 0.5 is 30 seconds).
        nonfinite: What a NaN or infinite training loss does: "stop" ends the run with an error
            (nothing of that step is saved or exported; resume=auto restarts from the last
            checkpoint), "skip" drops the step and counts it (skipped_steps in metrics.jsonl),
            which needs a DeepSpeed optimizer that discards non-finite gradients (ZeRO 1-3 with
            optimizer.grad_clip > 0, or fp16); the run still stops where the step was applied.
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
    deepspeed: str = "zero2"
    precision: str = "auto"
    output_dir: str = "runs/default"
    seed: int = 0
    resume: str = "auto"
    resume_allow_changes: bool = False
    dist_timeout_minutes: float = 30
    nonfinite: str = "stop"

    def __post_init__(self) -> None:
        _check(self.precision in PRECISIONS, f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        _check(bool(self.output_dir), "output_dir must be set")
        _check(0 <= self.seed < 2**63, f"seed must be between 0 and 2**63-1 (torch seeds are 64-bit), got {self.seed}")
        _check(bool(self.resume), "resume must be 'auto', 'none' or a checkpoint directory")
        _check(self.dist_timeout_minutes > 0, f"dist_timeout_minutes must be positive, got {self.dist_timeout_minutes}")
        _check(self.nonfinite in NONFINITE, f"nonfinite must be one of {list(NONFINITE)}, got {self.nonfinite!r}")
        if self.model.load_in_4bit:
            _check(self.lora.enabled, "model.load_in_4bit needs lora.enabled=true (4-bit weights cannot train)")
        if not self.lora.enabled:
            _check(len(self.finetune.modules) > 0,
                   "nothing to train besides memory: set lora.enabled=true or list finetune.modules")
        if not self.data.has_validation():
            ruled = [i for i, stage in enumerate(self.curriculum.stages) if stage.advance is not None]
            why = ("data.valid_samples is 0" if self.data.valid_samples == 0 else
                   "there is no validation data (set data.valid_sources or data.valid_fraction)")
            _check(not ruled, f"curriculum.stages {ruled} advance on a validation metric but {why}")
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
    """YAML recipe (optional: a file, or a shipped recipe's name) -> overrides -> validated TrainConfig."""
    values = read_yaml(find_recipe(path)) if path is not None else {}
    # Shipped recipes give only what differs from the defaults; stages given as a list replace the
    # default list, so index overrides apply to what the YAML says.
    for override in overrides:
        apply_override(values, override)
    return build_dataclass(TrainConfig, values)


def config_from_dict(values: dict) -> TrainConfig:
    """A validated TrainConfig from a resolved config (what `to_dict` gives, or a config.yaml)."""
    return build_dataclass(TrainConfig, values)
