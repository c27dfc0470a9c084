"""The pre-flight of one launch: what the run will do, decided once, before any model is built.

    plan = build_plan(config, source)     # every rank, before the process group exists
    logger.info(plan.describe())          # rank 0: config, filled DeepSpeed JSON, stages, outputs
    Trainer(plan).fit()                   # uses plan.curriculum, plan.ds_config, plan batch sizes

Everything that can fail without the other ranks fails here, so a bad config makes every rank exit
with the same one-line error and none waits for another. Nothing here loads weights: the base's
width (the ZeRO bucket sizes scale with it) comes from its config.json. `rmt-scale train
--dry-run` prints the same plan for a given number of ranks without starting any.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmt_scale import distributed
from rmt_scale.errors import CheckpointError, ConfigError
from rmt_scale.resources import find_ds_config, find_recipe
from rmt_scale.training import run_dir, run_lock
from rmt_scale.training.build import base_hidden_size
from rmt_scale.training.config import TrainConfig
from rmt_scale.training.curriculum import Curriculum, CurriculumState
from rmt_scale.training.curriculum_config import segments_range

# A resumed run must train what its checkpoint was trained on: these sections must match the
# checkpoint's config.yaml (unless resume_allow_changes=true).
RESUME_SECTIONS = ("model", "rmt", "lora", "data")
# Recomputation switches: results are identical with or without them (tested), so a resumed run
# may change them, e.g. on GPUs with more memory.
RESUME_FREE_KEYS = ("model.gradient_checkpointing", "rmt.segment_checkpointing")


@dataclass(frozen=True)
class StagePlan:
    """One curriculum stage as this run will train it.

    Attributes:
        index: Stage index (0-based).
        min_segments: Fewest segments per sample (equals num_segments unless the stage varies them).
        num_segments: Most segments per sample.
        steps: Optimizer steps; for a stage given in tokens, estimated at the mean number of segments.
        tokens: Training tokens (all ranks): samples x segments x segment_size, at the mean number
            of segments when the stage varies them; the stage's own number when given in tokens.
        exact: Whether steps and tokens are exact (fixed segments, no early advance).
        status: "done", "resumes at step N", "this launch" or "a later launch".
    """

    index: int
    min_segments: int
    num_segments: int
    steps: int
    tokens: int
    exact: bool
    status: str


@dataclass
class RunPlan:
    """Everything one launch decided before building the model; built once and passed on.

    Attributes:
        config: The validated training config.
        source: The YAML recipe it was read from (None when built in code).
        overrides: The `key=value` overrides applied to it.
        world_size: Ranks of this launch.
        precision: Resolved precision: fp32, bf16 or fp16.
        micro_batch: Samples per rank per forward pass.
        grad_accum: Micro-batches per optimizer step.
        global_batch: Samples per optimizer step over all ranks.
        curriculum: The stages, as pure logic.
        hidden_size: The base model's width (read from its config, not its weights).
        ds_source: The DeepSpeed JSON file that was read.
        ds_config: That JSON with every "auto" filled (and universal loading on when resuming
            on another world size or ZeRO stage).
        resume_from: The checkpoint to continue from, or None for a new run.
        universal: Whether that checkpoint loads through DeepSpeed's universal format.
        state: Where training stands at the start of this launch.
        stages: The per-stage table.
        data: The user's data (kinds text and qa), read, split and given to the stages once
            (rmt_scale.training.user_data); None for the built-in kinds, which build theirs lazily.
    """

    config: TrainConfig
    source: Path | None
    overrides: tuple[str, ...]
    world_size: int
    precision: str
    micro_batch: int
    grad_accum: int
    global_batch: int
    curriculum: Curriculum
    hidden_size: int
    ds_source: Path
    ds_config: dict
    resume_from: Path | None
    universal: bool
    state: CurriculumState
    stages: list[StagePlan] = field(default_factory=list)
    data: Any = None

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def final_dir(self) -> Path:
        """Where the adapter of the last checkpoint is exported once the last stage is done."""
        return self.output_dir / "final"

    def finished(self) -> bool:
        """All stages were done before this launch: nothing to train."""
        return self.curriculum.finished(self.state)

    def adamw(self) -> dict[str, Any]:
        """Keyword arguments of the AdamW optimizer (also what filled an "optimizer" section)."""
        return _adamw(self.config)

    def describe(self) -> str:
        """The plan as text: config, ranks and batch, the filled DeepSpeed JSON, the stages with
        their steps and tokens, and where every output goes."""
        config, out = self.config, self.output_dir
        lines = [f"config:      {self.source if self.source is not None else '(built in code)'}"]
        if self.overrides:
            lines.append(f"overrides:   {' '.join(self.overrides)}")
        lines += [
            f"ranks:       {self.world_size}, precision {self.precision}",
            f"batch:       {self.micro_batch} per rank x {self.grad_accum} accumulation x {self.world_size} "
            f"ranks = {self.global_batch} samples per step",
            f"base:        {_base_text(config)}, hidden size {self.hidden_size}",
        ]
        if self.resume_from is None:
            lines.append("resume:      none, a new run")
        else:
            lines.append(f"resume:      {self.resume_from} (stage {self.state.stage + 1}, step "
                         f"{self.state.step_in_stage} of it, global step {self.state.global_step})"
                         + (", through DeepSpeed's universal format" if self.universal else ""))
        lines.append(f"deepspeed:   {self.ds_source}, filled:")
        lines += [f"  {line}" for line in json.dumps(self.ds_config, indent=2).splitlines()]
        lines.append(f"stages ({config.rmt.segment_size} tokens per segment; ~ marks estimates):")
        lines.append(f"  {'stage':>5}  {'segments':>8}  {'steps':>8}  {'tokens':>14}  status")
        for row in self.stages:
            segments = segments_range(row.min_segments, row.num_segments)
            mark = "" if row.exact else "~"
            advance = config.curriculum.stages[row.index].advance
            note = f" (may end early: {advance.metric} {'>=' if advance.metric == 'accuracy' else '<='} " \
                   f"{advance.threshold})" if advance is not None else ""
            lines.append(f"  {row.index + 1:>5}  {segments:>8}  {mark + str(row.steps):>8}  "
                         f"{mark + f'{row.tokens:,}':>14}  {row.status}{note}")
        if self.data is not None:
            lines += self.data.describe()
        every = config.checkpoint.every_steps
        lines += [
            "outputs:",
            f"  run directory   {out}",
            f"  config          {out / run_dir.CONFIG_FILE}",
            f"  metrics         {out / run_dir.METRICS_FILE}",
            f"  tensorboard     {out / 'tensorboard' if config.logging.tensorboard else 'off'}",
            f"  checkpoints     {run_dir.checkpoint_root(out)} ("
            + (f"every {every} steps and " if every else "") + "at every stage end; keep "
            + (f"the last {config.checkpoint.keep_last})" if config.checkpoint.keep_last else "all)"),
            f"  final adapter   {self.final_dir} (exported from the last checkpoint after the last stage)",
        ]
        if config.logging.wandb:
            lines.append(f"  W&B             project {config.logging.wandb_project}, run id kept in "
                         f"{out / run_dir.WANDB_RUN_ID}")
        return "\n".join(lines)


def build_plan(config: TrainConfig, source: str | Path | None = None, overrides: tuple[str, ...] | list[str] = (),
               world_size: int | None = None) -> RunPlan:
    """Check everything that needs no other rank and decide what this launch does.

    Args:
        config: The validated training config.
        source: The recipe it came from (shown in the plan).
        overrides: The overrides applied to it (shown in the plan).
        world_size: Ranks of the launch; None reads the launcher's environment.

    Raises:
        ConfigError, CheckpointError: A config, path, batch size or resume point that cannot work.
    """
    world = distributed.env_world_size() if world_size is None else world_size
    precision = distributed.resolve_precision(config.precision)
    micro, accum, global_batch = config.batch.resolve(world)
    hidden = base_hidden_size(config.model)  # also checks model.path
    ds_source = find_ds_config(config.deepspeed)
    ds_config = distributed.fill_ds_config(
        distributed.read_ds_config(ds_source), micro_batch=micro, grad_accum=accum, train_batch=global_batch,
        grad_clip=config.optimizer.grad_clip, precision=precision, hidden_size=hidden,
        optimizer=_adamw(config), source=str(ds_source))
    if config.model.load_in_4bit and distributed.partitions_parameters(ds_config):
        raise ConfigError(f"{ds_source}: ZeRO-3 cannot partition 4-bit weights; use deepspeed=zero2 "
                          "(or zero1) with model.load_in_4bit=true")

    run_lock.check_output_dir(config.output_dir)  # a directory of the user's own files is refused
    resume_from = run_dir.resolve_resume(config.resume, config.output_dir, check=check_checkpoint)
    if config.resume == "none" and run_dir.latest_checkpoint(config.output_dir) is not None:
        raise ConfigError(f"output_dir {config.output_dir} holds checkpoints of an earlier run and "
                          "resume=none would mix a new run into them; use resume=auto or another output_dir")
    curriculum = Curriculum(config.curriculum.stages, config.rmt.segment_size, config.seed)
    state, universal = CurriculumState(), False
    if resume_from is not None:
        saved = run_dir.read_trainer_state(resume_from)
        state = CurriculumState.from_dict(saved.get("curriculum", {}))
        curriculum.check_resumable(state)
        if not curriculum.finished(state):  # a finished run trains nothing: no change can matter
            if not config.resume_allow_changes:
                check_unchanged(config, resume_from)
            try:
                saved_world, saved_stage = int(saved["world_size"]), int(saved["zero_stage"])
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(f"{resume_from / run_dir.TRAINER_STATE}: no world_size and zero_stage; "
                                      "not written by rmt-scale? resume from another checkpoint") from None
            universal = distributed.needs_universal(saved_world, saved_stage, world, distributed.zero_stage(ds_config))
    if universal:
        ds_config = distributed.enable_universal_loading(ds_config)
    plan = RunPlan(config=config, source=find_recipe(source) if source is not None else None,
                   overrides=tuple(overrides), world_size=world, precision=precision, micro_batch=micro,
                   grad_accum=accum, global_batch=global_batch, curriculum=curriculum, hidden_size=hidden,
                   ds_source=ds_source, ds_config=ds_config, resume_from=resume_from, universal=universal,
                   state=state)
    plan.stages = stage_table(plan)
    if config.data.kind in ("text", "qa") and not plan.finished():
        # Read once here, on every rank: bad data stops every rank with the same line, and the
        # plan (also --dry-run) says what each stage trains on.
        from rmt_scale.training.data import run_tokenizer
        from rmt_scale.training.user_data import prepare_user_data

        plan.data = prepare_user_data(config, run_tokenizer(config))
    return plan


def _base_text(config: TrainConfig) -> str:
    model = config.model
    if model.init == "random":
        return f"random {model.random.arch} (model.random, seed {model.random.seed})"
    where = f"{model.path} (local cache: {model.resolved_path()})" if model.model_id() else str(model.resolved_path())
    return where + (" in 4-bit" if model.load_in_4bit else "")


def _adamw(config: TrainConfig) -> dict[str, Any]:
    opt = config.optimizer
    return {"lr": opt.lr, "betas": list(opt.betas), "eps": opt.eps, "weight_decay": opt.weight_decay}


def check_checkpoint(checkpoint: Path) -> None:
    """What resume needs of a checkpoint before any rank loads it: its manifest holds, and every
    torch file in it unpickles with weights_only=True and the allow-list, so none can run code
    (the same reader then serves DeepSpeed's own loading). A failing newest checkpoint makes
    resume=auto fall back to the previous one."""
    run_dir.verify_checkpoint(checkpoint)
    distributed.check_loadable(checkpoint)


def config_changes(saved: TrainConfig, current: TrainConfig) -> list[str]:
    """Dotted keys of RESUME_SECTIONS whose values differ between two configs."""
    old, new = saved.to_dict(), current.to_dict()
    changed: list[str] = []
    for section in RESUME_SECTIONS:
        changed += _differences(old[section], new[section], section)
    return [key for key in changed if key not in RESUME_FREE_KEYS]


def _differences(old: Any, new: Any, key: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [hit for name in dict.fromkeys([*old, *new])
                for hit in _differences(old.get(name), new.get(name), f"{key}.{name}")]
    return [] if old == new else [key]


def check_unchanged(config: TrainConfig, checkpoint: Path) -> None:
    """Refuse to resume `checkpoint` with a model, rmt, lora or data section it was not trained with."""
    changed = config_changes(run_dir.read_checkpoint_config(checkpoint), config)
    if changed:
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise ConfigError(f"resume from {checkpoint}: the config differs from the checkpoint's "
                          f"{run_dir.CONFIG_FILE} in {shown}; undo the change, use another output_dir "
                          "(or resume=none there), or pass resume_allow_changes=true to resume anyway")


def stage_table(plan: RunPlan) -> list[StagePlan]:
    """Steps, tokens and status of every stage under this plan."""
    config, curriculum, state = plan.config, plan.curriculum, plan.state
    budget = config.curriculum.stages_per_launch
    last_this_launch = len(curriculum) if budget is None else state.stage + budget
    rows = []
    for index, stage in enumerate(curriculum.stages):
        low = stage.fewest_segments
        steps = curriculum.stage_steps(index, plan.global_batch)
        mean_segments = (low + stage.num_segments) / 2
        tokens = stage.tokens if stage.tokens is not None else \
            round(steps * plan.global_batch * mean_segments * config.rmt.segment_size)
        exact = (stage.steps is not None and low == stage.num_segments and stage.advance is None
                 and config.data.kind != "qa")  # QA samples fill their last segment in part
        if index < state.stage:
            status = "done"
        elif index == state.stage and state.step_in_stage:
            status = f"resumes at step {state.step_in_stage}"
        elif index < last_this_launch:
            status = "this launch"
        else:
            status = "a later launch"
        rows.append(StagePlan(index, low, stage.num_segments, steps, int(tokens), exact, status))
    return rows
