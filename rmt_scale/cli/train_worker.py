"""The per-rank training entry: one process of `rmt-scale train` (or of the DeepSpeed launcher).

    python -m rmt_scale.cli.train_worker --config NAME_OR_PATH [key.sub=value ...]      # one process
    deepspeed --module rmt_scale.cli.train_worker --config tiny                         # N ranks
    deepspeed launch/train.py --config launch/configs/tiny.yaml                         # a clone

Every rank reads the config and builds the run plan (rmt_scale.training.plan), trains, frees the
engine and leaves the process group; then rank 0 exports the last checkpoint to output_dir/final
with the code of `rmt-scale export`, so final/ is exactly what that command writes.

A user error (rmt_scale.errors.RMTScaleError: config, data, checkpoint) prints one line
`error: ...` on rank 0 and exits with status 2 on every rank; Ctrl-C prints how to resume and exits
130; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys

from rmt_scale.errors import RMTScaleError

# Tokenizer threads in every rank would oversubscribe the cores the ranks share.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Named, not __name__: run with `python -m` this module is __main__, outside the package's logger.
logger = logging.getLogger("rmt_scale.cli.train_worker")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rmt_scale.cli.train_worker",
        description="One rank of a training run (started by `rmt-scale train` or the DeepSpeed launcher).")
    parser.add_argument("--config", required=True,
                        help="a shipped recipe by name (rmt-scale configs ls) or a YAML file")
    parser.add_argument("--local_rank", type=int, default=None,
                        help="set by the DeepSpeed launcher; the rank is read from the environment")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="config overrides, e.g. output_dir=runs/x seed=1 curriculum.stages.0.steps=50")
    return parser.parse_args(argv)


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def run(config_arg: str, overrides: list[str]) -> None:
    """Plan, train, and export the final adapter (rank 0) when the last stage is done."""
    # Imported here so that --help is instant.
    from rmt_scale import distributed
    from rmt_scale.export.adapter import export_checkpoint
    from rmt_scale.resources import find_recipe
    from rmt_scale.training.config import load_train_config
    from rmt_scale.training.loop import train
    from rmt_scale.training.metrics import setup_logging
    from rmt_scale.training.plan import build_plan

    source = find_recipe(config_arg)
    config = load_train_config(source, overrides)
    setup_logging(config.logging.level)
    plan = build_plan(config, source, overrides)
    trainer = train(plan)
    if trainer is None:
        return
    finished, checkpoint = trainer.curriculum.finished(trainer.state), trainer.last_checkpoint
    trainer.close()
    del trainer
    # Export after the process group is gone: it needs no other rank, and the others may exit.
    distributed.teardown(wait=True)
    if finished and _is_rank0():
        export_checkpoint(checkpoint, plan.final_dir)
        logger.info("training done; the adapter of %s is in %s", checkpoint.name, plan.final_dir)


def resume_command(config_arg: str, overrides: list[str]) -> str:
    """The command that continues an interrupted run (resume=auto picks its newest checkpoint)."""
    kept = [o for o in overrides if not o.startswith("resume=")]
    return shlex.join(["rmt-scale", "train", "--config", config_arg, *kept])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from rmt_scale.distributed import teardown

    try:
        run(args.config, args.overrides)
    except RMTScaleError as err:
        # Every rank exits; rank 0 says why, in one line.
        if _is_rank0():
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            print(f"error: {message}", file=sys.stderr, flush=True)
        teardown(wait=False)
        return 2
    except KeyboardInterrupt:
        if _is_rank0():
            print(f"interrupted; resume with: {resume_command(args.config, args.overrides)} (resume=auto)",
                  file=sys.stderr, flush=True)
        teardown(wait=False)
        return 130
    except BaseException:
        teardown(wait=False)
        raise
    teardown(wait=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
