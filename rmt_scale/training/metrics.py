"""What a run reports: rank-0 logging, a progress bar, metrics.jsonl, TensorBoard, W&B.

Only rank 0 writes or prints; the other ranks get a `RunLogger` whose methods do nothing, so the
training loop never asks which rank it is on to log.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from rmt_scale.errors import InputError
from rmt_scale.training.config import LoggingConfig
from rmt_scale.training.run_dir import METRICS_FILE, wandb_run_id

logger = logging.getLogger(__name__)


class RankZeroFilter(logging.Filter):
    """Let records through on rank 0 only (the rank the launcher put in the environment)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return os.environ.get("RANK", "0") == "0"


def setup_logging(level: str) -> None:
    """Log the project's messages to stderr from rank 0; keep DeepSpeed's chatter at warnings."""
    handler = logging.StreamHandler()
    handler.addFilter(RankZeroFilter())
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    package = logging.getLogger("rmt_scale")
    package.handlers = [h for h in package.handlers if not getattr(h, "rmt_scale_run", False)]
    handler.rmt_scale_run = True  # replaced, not stacked, when a process trains twice
    package.addHandler(handler)
    package.setLevel(level.upper())
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    if os.environ.get("RANK", "0") != "0":
        # One set of "Loading weights" / "Generating split" bars, from rank 0, is enough.
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()


class RunLogger:
    """Metrics sink of one launch.

    Args:
        output_dir: The run directory (metrics.jsonl and tensorboard/ go there).
        settings: The `logging` section of the config.
        enabled: True on rank 0 only.
        run_config: The resolved config as a dict (sent to W&B).
    """

    def __init__(self, output_dir: str | Path, settings: LoggingConfig, enabled: bool, run_config: dict):
        self.enabled = enabled
        self.settings = settings
        self.bar = None
        self.tensorboard = None
        self.wandb = None
        if not enabled:
            return
        output_dir = Path(output_dir)
        self.metrics = open(output_dir / METRICS_FILE, "a")
        if settings.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(output_dir / "tensorboard"))
        if settings.wandb:
            try:
                import wandb
            except ImportError:
                logger.warning("logging.wandb=true but wandb is not installed; logging without it")
            else:
                # One W&B run per run directory: a resumed launch or the next stage's job
                # continues the run the first launch created.
                self.wandb = wandb.init(project=settings.wandb_project, config=run_config,
                                        dir=str(output_dir), id=wandb_run_id(output_dir),
                                        name=output_dir.name, resume="allow")

    def start_stage(self, stage: int, num_stages: int, total_steps: int, done_steps: int) -> None:
        if not (self.enabled and self.settings.progress_bar):
            return
        from tqdm import tqdm

        self.close_bar()
        self.bar = tqdm(total=total_steps, initial=done_steps, desc=f"stage {stage + 1}/{num_stages}",
                        dynamic_ncols=True, leave=True)

    def log(self, record: dict, kind: str) -> None:
        """Write one record ({"step": ..., metrics...}) of `kind` "train" or "eval"."""
        if not self.enabled:
            return
        record = {"kind": kind, **record, "time": round(time.time(), 3)}
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        step = record["step"]
        numbers = {k: v for k, v in record.items()
                   if isinstance(v, (int, float)) and k not in ("step", "time")}
        if self.tensorboard is not None:
            for key, value in numbers.items():
                self.tensorboard.add_scalar(f"{kind}/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"{kind}/{k}": v for k, v in numbers.items()}, step=step)

    def advance_bar(self, stage: int, step_in_stage: int, loss: float, tokens_per_s: float) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        self.bar.set_postfix(stage=stage + 1, step=step_in_stage, loss=f"{loss:.4f}",
                             tok_s=f"{tokens_per_s:,.0f}", refresh=False)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        if not self.enabled:
            return
        self.close_bar()
        self.metrics.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def read_metrics(output_dir: str | Path, kind: str | None = None) -> list[dict]:
    """The records of a run's metrics.jsonl, oldest first (the one reader of that file).

    A line cut by a killed process is skipped: the rest of the log is still good.

    Args:
        output_dir: The run directory.
        kind: Only records of this kind ("train" or "eval"); None returns all.

    Raises:
        InputError: The run directory has no metrics.jsonl.
    """
    path = Path(output_dir) / METRICS_FILE
    if not path.is_file():
        raise InputError(f"{path}: missing; is {output_dir} a training output directory?")
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and (kind is None or record.get("kind") == kind):
            records.append(record)
    return records

