"""The training loop: set up -> stages of steps. Explicit; no HF Trainer.

    plan = build_plan(config, source)     # training/plan.py: every check that needs no other rank
    init_process_group()                  # (so a bad config stops every rank, none hangs)
    lock = run_lock.claim(output_dir)     # rank 0: this launch alone writes the run directory
    trainer = Trainer(plan)               # model -> data -> DeepSpeed engine -> resume
    for each remaining stage:             # as many as curriculum.stages_per_launch allows
        for each step:                    # loss = engine(batch).loss; engine.backward(loss); engine.step()
            log, maybe evaluate (early advance), maybe checkpoint
        evaluate, checkpoint (the next launch can start here)
    trainer.close()

The adapter of the last checkpoint (output_dir/final) is written afterwards by the entry point
(rmt_scale.cli.train_worker) with `rmt-scale export`'s code, once the engine and the process group
are gone: one writer of adapter directories.

One optimizer step reads `global batch` samples at the stage's data position; rank r's micro-batch
a holds positions [(a * world + r) * micro, ... + micro), so the same samples make the same step
on any number of ranks when the global batch is fixed.

A NaN or infinite training loss stops the run before anything of that step is saved (or, with
nonfinite=skip, drops the step when DeepSpeed discarded its update), and validation reports a NaN
loss as NaN, which never advances a stage.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch

from rmt_scale import distributed
from rmt_scale.errors import ConfigError, TrainingError
from rmt_scale.model.segments import IGNORE_INDEX
from rmt_scale.training import run_dir, run_lock
from rmt_scale.training.build import build_model, describe_trainable
from rmt_scale.training.curriculum import CurriculumState, step_seed
from rmt_scale.training.data import RunData
from rmt_scale.training.metrics import RunLogger
from rmt_scale.training.plan import RunPlan

logger = logging.getLogger(__name__)


class Trainer:
    """One launch of a run: builds the model, data and engine from the plan, resumes, then `fit`
    trains. Needs the process group (distributed.init_process_group) to exist."""

    def __init__(self, plan: RunPlan):
        config = plan.config
        self.plan = plan
        self.config = config
        self.rank = distributed.rank()
        self.world = distributed.world_size()
        if self.world != plan.world_size:
            raise RuntimeError(f"the plan is for {plan.world_size} ranks but {self.world} started")
        self.device = distributed.device()
        self.curriculum = plan.curriculum
        self.state = plan.state
        self.micro, self.accum, self.global_batch = plan.micro_batch, plan.grad_accum, plan.global_batch
        self.output_dir = plan.output_dir
        self.last_checkpoint: Path | None = plan.resume_from
        self.run_lock = None  # rank 0's lock on output_dir (run_lock.claim), released by the caller
        saved = run_dir.read_trainer_state(plan.resume_from) if plan.resume_from is not None else {}
        self.skipped_steps = int(saved.get("skipped_steps", 0))  # non-finite steps skipped, all launches

        self.model = build_model(config, plan.precision, self.device)
        trainable, total, kinds = describe_trainable(self.model)
        logger.info("trainable parameters: %s of %s (%.3f%%): %s", f"{trainable:,}", f"{total:,}",
                    100 * trainable / total, ", ".join(kinds))
        vocab = self.model.cell.causal_lm.get_input_embeddings().weight.shape[0]
        self.data = RunData(config, vocab, run_first=distributed.rank0_first, user_data=plan.data)
        # Build the first stage's data now: an empty or broken dataset stops the run before it
        # writes anything.
        first = self.curriculum.stage(self.state).num_segments
        self.data.train(first, self.state.stage)
        self.data.valid(first, self.state.stage)
        if plan.universal:
            distributed.prepare_universal(plan.resume_from)
        self.zero_stage = distributed.zero_stage(plan.ds_config)
        self.engine = distributed.create_engine(self.model, plan.ds_config, plan.adamw())
        logger.info("%d rank(s), ZeRO stage %d, %s; batch: %d per rank x %d accumulation x %d ranks = %d",
                    self.world, self.zero_stage, plan.precision, self.micro, self.accum, self.world,
                    self.global_batch)
        logger.info("memory parameter: %s", distributed.describe_partitioning(self.model.memory))
        if plan.resume_from is not None:
            distributed.load_checkpoint(self.engine, plan.resume_from, plan.universal)
            logger.info("resumed from %s: stage %d, step %d of the stage, global step %d%s",
                        plan.resume_from, self.state.stage + 1, self.state.step_in_stage,
                        self.state.global_step, " (universal checkpoint)" if plan.universal else "")
        if distributed.is_main():
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / run_dir.CONFIG_FILE).write_text(config.to_yaml())
            run_dir.truncate_metrics(self.output_dir, self.state.global_step)
        distributed.barrier()
        self.log = RunLogger(self.output_dir, config.logging, distributed.is_main(), config.to_dict())

    # --- the loop ------------------------------------------------------------------------------

    def fit(self) -> CurriculumState:
        """Run the remaining stages (up to curriculum.stages_per_launch of them)."""
        budget = self.config.curriculum.stages_per_launch
        stages_run = 0
        try:
            while not self.curriculum.finished(self.state) and (budget is None or stages_run < budget):
                self.run_stage()
                stages_run += 1
            if not self.curriculum.finished(self.state):
                logger.info("stopping at the end of stage %d as curriculum.stages_per_launch=%d; "
                            "launch again with resume=auto to continue", self.state.stage, budget)
        finally:
            self.log.close()
        return self.state

    def close(self) -> None:
        """Free the engine and the model (before the export, which builds the model again)."""
        distributed.release_engine(self.engine)
        self.engine = self.model = self.data = None

    def run_stage(self) -> None:
        curriculum, config = self.curriculum, self.config
        index, stage = self.state.stage, curriculum.stage(self.state)
        total = curriculum.stage_steps(index, self.global_batch)
        logger.info("stage %d/%d: %d segment(s) of %d tokens, %s", index + 1, len(curriculum),
                    stage.num_segments, config.rmt.segment_size,
                    f"{stage.steps} steps" if stage.steps else f"{stage.tokens:,} tokens")
        self.log.start_stage(index, len(curriculum), total, self.state.step_in_stage)
        evaluated_at = None
        while not curriculum.stage_length_reached(self.state):
            self.train_step()
            step = self.state.step_in_stage
            if config.eval.every_steps and step % config.eval.every_steps == 0:
                metrics = self.evaluate(stage.num_segments)
                evaluated_at = self.state.global_step
                if metrics and curriculum.should_advance_early(self.state, metrics):
                    logger.info("stage %d: %s reached %s at step %d; advancing early", index + 1,
                                stage.advance.metric, stage.advance.threshold, step)
                    break
            every = config.checkpoint.every_steps
            if every and self.state.global_step % every == 0 and not curriculum.stage_length_reached(self.state):
                self.save()
        self.log.close_bar()
        if config.eval.at_stage_end and evaluated_at != self.state.global_step:
            self.evaluate(stage.num_segments)
        self.state = curriculum.next_stage(self.state)
        self.save()

    def train_step(self) -> None:
        """One optimizer step over the global batch at the current data position."""
        state, curriculum = self.state, self.curriculum
        num_segments = curriculum.num_segments(state)
        dataset = self.data.train(num_segments, state.stage)
        indices = curriculum.sample_indices(state, self.global_batch, len(dataset))
        lr = curriculum.learning_rate(state, self.config.optimizer.lr, self.config.schedule, self.global_batch)
        distributed.set_learning_rate(self.engine, lr)
        # Dropout draws depend on (seed, step, rank) only: a resumed run repeats them exactly.
        torch.manual_seed(step_seed(self.config.seed, state.global_step, self.rank))
        started = time.perf_counter()
        self.engine.train()
        loss_sum, tokens = 0.0, 0
        for micro_step in range(self.accum):
            start = (micro_step * self.world + self.rank) * self.micro
            batch = self.batch([dataset[i] for i in indices[start : start + self.micro]])
            loss = self.engine(**batch).loss
            self.engine.backward(loss)
            self.engine.step()
            loss_sum += loss.item()
            tokens += int(batch["attention_mask"].sum())
        loss_sum, count, tokens = distributed.all_reduce_sum([loss_sum, self.accum, tokens])
        elapsed = time.perf_counter() - started
        loss = loss_sum / count
        skipped = not math.isfinite(loss) and self.skip_nonfinite(loss, state.global_step + 1)
        self.state = curriculum.after_step(state, samples=self.global_batch, tokens=int(tokens))
        tokens_per_s = tokens / max(elapsed, 1e-9)
        self.log.advance_bar(self.state.stage, self.state.step_in_stage, loss, tokens_per_s)
        if skipped or self.state.global_step % self.config.logging.every_steps == 0:
            record = {"step": self.state.global_step, "stage": self.state.stage,
                      "step_in_stage": self.state.step_in_stage, "num_segments": num_segments,
                      "loss": loss, "lr": lr, "tokens": int(tokens), "tokens_per_s": tokens_per_s}
            if self.skipped_steps:
                record["skipped_steps"] = self.skipped_steps
            self.log.log(record, "train")

    def skip_nonfinite(self, loss: float, step: int) -> bool:
        """Handle a NaN or infinite training loss (the all-reduced one: every rank decides alike).

        Returns True when the step was skipped (nonfinite=skip, and DeepSpeed's optimizer left
        the weights alone); otherwise stops the run before anything of this step is saved.
        """
        if self.config.nonfinite == "skip" and not distributed.step_applied(self.engine):
            self.skipped_steps += 1
            logger.warning("step %d: loss is %s; the step was skipped (nonfinite=skip; %d skipped in all)",
                           step, loss, self.skipped_steps)
            return True
        applied = (" and the optimizer applied the step (nonfinite=skip needs ZeRO stage 1-3 with "
                   "optimizer.grad_clip > 0, or fp16)") if self.config.nonfinite == "skip" else ""
        since = self.last_checkpoint.name if self.last_checkpoint is not None else "the start"
        raise TrainingError(f"step {step}: the training loss is {loss}{applied}; nothing after {since} is "
                            "saved or exported: lower optimizer.lr (or the stage's lr) or check the data, "
                            "then launch again (resume=auto continues from there), or set nonfinite=skip")

    def batch(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in self.data.collate(samples).items()}

    @torch.no_grad()
    def evaluate(self, num_segments: int) -> dict[str, float]:
        """Validation loss and accuracy (labelled tokens predicted right) at this length.

        The samples are split over ranks in equal numbers of batches (ZeRO-3 needs every rank in
        every forward); padding repeats carry zero weight.
        """
        dataset = self.data.valid(num_segments, self.state.stage)
        if dataset is None:
            return {}
        self.engine.eval()
        per_rank = math.ceil(len(dataset) / self.world)
        loss_sum = correct = count = 0.0
        # Text windows all have num_segments segments: the loss of each segment position shows
        # whether later segments, read with more memory, are predicted better than the first.
        per_segment = torch.zeros(2, num_segments, dtype=torch.float64) \
            if self.config.data.kind == "text" else None
        for first in range(0, per_rank, self.micro):
            positions = [self.rank + self.world * j for j in range(first, min(first + self.micro, per_rank))]
            weights = torch.tensor([float(p < len(dataset)) for p in positions], device=self.device)
            batch = self.batch([dataset[p if p < len(dataset) else 0] for p in positions])
            batch["labels"][weights == 0] = IGNORE_INDEX  # padding repeats score nothing
            out = self.engine(**batch)
            if per_segment is not None:
                per_segment += torch.stack([out.segment_loss_sum.double().cpu(),
                                            out.segment_tokens.double().cpu()])
            predicted = out.predictions[:, :-1]  # argmax at scored positions only, no (T x V) logits
            targets = batch["labels"][:, 1:]
            labelled = targets != IGNORE_INDEX
            sample_count = labelled.sum(-1).float()
            sample_correct = ((predicted == targets) & labelled).sum(-1).float()
            # A sample without labelled tokens has loss 0/0 = NaN and weight 0; any other NaN is
            # real and must show in the reported loss (and so never advance a stage).
            sample_loss = torch.where(sample_count > 0, out.sample_loss.float() * sample_count, 0.0)
            loss_sum += float((sample_loss * weights).sum())
            correct += float((sample_correct * weights).sum())
            count += float((sample_count * weights).sum())
        loss_sum, correct, count = distributed.all_reduce_sum([loss_sum, correct, count])
        self.engine.train()
        if count == 0:
            return {}
        metrics = {"loss": loss_sum / count, "accuracy": correct / count}
        logger.info("eval stage %d step %d (%d segments): loss %.4f, accuracy %.3f", self.state.stage + 1,
                    self.state.step_in_stage, num_segments, metrics["loss"], metrics["accuracy"])
        if per_segment is not None:
            sums = distributed.all_reduce_sum(per_segment.flatten().tolist())
            for k in range(num_segments):
                metrics[f"loss_segment_{k + 1}"] = sums[k] / max(sums[num_segments + k], 1.0)
            logger.info("eval loss per segment: %s", " ".join(
                f"{metrics[f'loss_segment_{k + 1}']:.4f}" for k in range(num_segments)))
        self.log.log({"step": self.state.global_step, "stage": self.state.stage,
                      "num_segments": num_segments, **metrics}, "eval")
        return metrics

    # --- checkpoints ----------------------------------------------------------------------------

    def trainer_state(self) -> dict:
        return {
            "curriculum": self.state.to_dict(),
            "world_size": self.world,
            "zero_stage": self.zero_stage,
            "precision": self.plan.precision,
            "global_batch_size": self.global_batch,
            "seed": self.config.seed,
            "skipped_steps": self.skipped_steps,
            # No RNG state to restore: data order, segment draws and dropout seeds are functions
            # of (seed, stage, step, rank), so they resume exactly on any number of ranks.
            "rng": "derived from seed, stage, step and rank",
        }

    def save(self) -> None:
        self.last_checkpoint = run_dir.save_checkpoint(
            self.engine, self.output_dir, self.state.global_step, self.trainer_state(), self.config.to_yaml(),
            self.config.checkpoint.keep_last)
        logger.info("saved %s", self.last_checkpoint)


def train(plan: RunPlan) -> Trainer | None:
    """Train the remaining stages of `plan` on the ranks of this launch (process group started
    here). Returns the trainer (still holding its engine: `close` it), or None when every stage
    was done already."""
    logger.info("run plan\n%s", plan.describe())
    if plan.finished():
        logger.info("%s: all %d stages are done already; nothing to train", plan.resume_from,
                    len(plan.curriculum))
        return None
    distributed.init_process_group(plan.config.dist_timeout_minutes)
    # Rank 0 marks and locks the run directory for the whole launch; a second launch on it stops
    # here, every rank of it, with a line naming the holder.
    lock = distributed.on_rank0(lambda: run_lock.claim(plan.output_dir), catch=(ConfigError,))
    try:
        trainer = Trainer(plan)
        trainer.run_lock = lock
        trainer.fit()
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return trainer
