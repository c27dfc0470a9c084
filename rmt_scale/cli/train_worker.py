"""The per-rank training entry: one process of `rmt-scale train` (or of the DeepSpeed launcher).

    python -m rmt_scale.cli.train_worker --config NAME_OR_PATH [key.sub=value ...]      # one process
    deepspeed --module rmt_scale.cli.train_worker --config tiny                         # N ranks
    deepspeed launch/train.py --config launch/configs/tiny.yaml                         # a clone

Every rank reads the config and builds the run plan (rmt_scale.training.plan), trains, frees the
engine and leaves the process group; then rank 0 exports the last checkpoint to output_dir/final
with the code of `rmt-scale export`, so final/ is exactly what that command writes.

A user error (rmt_scale.errors.RMTScaleError: config, data, checkpoint) prints one line
`error: ...` on rank 0 and exits with status 2 on every rank; a rank that another rank left waiting
(past dist_timeout_minutes) or that lost a rank mid-collective says so itself, whichever rank it
is. Ctrl-C (SIGINT) or SIGTERM prints how to resume and exits 130, also when it lands while DeepSpeed
waits in a collective: the other ranks got the signal too, and the error their exit causes here
counts as the interrupt, not as a bug. Under `rmt-scale train` the parent prints that line instead,
once. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
from typing import NoReturn

from rmt_scale.errors import DistributedError, RMTScaleError, first_line

# Tokenizer threads in every rank would oversubscribe the cores the ranks share.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Set by `rmt-scale train` for the ranks it starts: it prints the "interrupted" line itself, once.
PARENT_REPORTS_INTERRUPT = "RMT_SCALE_PARENT_REPORTS_INTERRUPT"

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
    try:
        trainer = train(plan)
        if trainer is None:
            return
        lock = trainer.run_lock  # rank 0 holds output_dir until final/ is written
        try:
            finished, checkpoint = trainer.curriculum.finished(trainer.state), trainer.last_checkpoint
            trainer.close()
            del trainer
            # Export after the process group is gone: it needs no other rank, and the others may exit.
            distributed.teardown(wait=True)
            if finished and _is_rank0():
                export_checkpoint(checkpoint, plan.final_dir, trust_remote_code=plan.config.model.trust_remote_code)
                logger.info("training done; the adapter of %s is in %s", checkpoint.name, plan.final_dir)
        finally:
            if lock is not None:
                lock.release()
    except Exception as err:
        lost = distributed.lost_rank_error(err, config.dist_timeout_minutes)
        if lost is None:
            raise
        raise lost from err


def resume_command(config_arg: str, overrides: list[str]) -> str:
    """The command that continues an interrupted run (resume=auto picks its newest checkpoint)."""
    kept = [o for o in overrides if not o.startswith("resume=")]
    return shlex.join(["rmt-scale", "train", "--config", config_arg, *kept])


class _Stop:
    """The stop signal this process got, if any (see `_on_signal`)."""

    signum: int | None = None


def _on_signal(signum: int, frame) -> None:
    """SIGINT / SIGTERM: raise KeyboardInterrupt once, where Python code is running.

    When the signal lands while an error is already being handled (typically a collective that
    failed because the other ranks, interrupted too, exited), it is only recorded: `main` then
    treats that error as the interrupt. A second signal (the launcher's SIGTERM after Ctrl-C)
    does not interrupt the clean-up of the first.
    """
    first = _Stop.signum is None
    _Stop.signum = signum
    if first and sys.exc_info()[1] is None:
        raise KeyboardInterrupt


def _settle() -> None:
    """A Python-level call: a signal that arrived during the C++ call that just failed has its
    handler run here, before the error is classified."""


def main(argv: list[str] | None = None, leave_group_on_error: bool = True) -> int:
    """Train; return the exit status (0 done, 2 user error, 130 interrupted).

    Args:
        leave_group_on_error: Destroy the process group when the run fails or is interrupted, so
            that this process can train again (tests, notebooks). `exit_rank` skips it: the
            process ends at once instead.
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from rmt_scale.distributed import teardown

    _Stop.signum = None
    previous = {signum: signal.signal(signum, _on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        run(args.config, args.overrides)
    except BaseException as err:  # noqa: BLE001 - classified below; bugs are raised again
        _settle()
        try:
            code = _failed(err, args)
        except BaseException:
            # A bug: its traceback follows and the interpreter finalizes, which needs the group gone.
            teardown(wait=False)
            raise
        if leave_group_on_error:
            teardown(wait=False)  # never waiting for another rank: it may be gone
        return code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    teardown(wait=True)
    return 0


def _failed(err: BaseException, args: argparse.Namespace) -> int:
    """Print the one line a stopped run deserves and return its exit status; raise `err` again if it
    is a bug."""
    if _Stop.signum is not None or isinstance(err, KeyboardInterrupt):
        if _is_rank0() and not os.environ.get(PARENT_REPORTS_INTERRUPT):
            how = "stopped by SIGTERM" if _Stop.signum == signal.SIGTERM else "interrupted"
            print(f"{how}; resume with: {resume_command(args.config, args.overrides)} (resume=auto)",
                  file=sys.stderr, flush=True)
        return 130
    if isinstance(err, RMTScaleError):
        # Every rank exits; rank 0 says why, in one line (a lost rank is told by whoever saw it).
        if _is_rank0() or isinstance(err, DistributedError):
            print(f"error: {first_line(err)}", file=sys.stderr, flush=True)
        return 2
    raise err


def exit_rank() -> NoReturn:
    """Run one launched rank (`python -m`, the DeepSpeed launcher, launch/train.py) and end it.

    A failed or interrupted rank ends with os._exit once its output is flushed, skipping the
    process group's destruction and the interpreter's finalization. Both run C++ destructors of
    gloo's threads while another rank may be exiting or gone, and CI once saw rank 1 of a
    two-rank launch abort there ("terminate called without an active exception", SIGABRT)
    after a data error, so the launcher reported -6 instead of the error's status 2. Nothing is
    lost: the run has closed its files, checkpoints and run lock before `main` returns.
    """
    code = main(leave_group_on_error=False)
    if code == 0:
        sys.exit(0)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_rank()
