"""The files of a training run: checkpoint directories, trainer state, metrics, the W&B run id.

    output_dir/
      config.yaml                    resolved config of the latest launch
      metrics.jsonl                  one JSON record per logged step / evaluation (rank 0)
      tensorboard/                   event files
      wandb_run_id                   the W&B run every launch of this run logs to (with logging.wandb)
      checkpoints/
        checkpoint-000040/           complete: has the `complete` marker
          deepspeed/                 engine.save_checkpoint (trainable weights + optimizer state)
          trainer_state.json         curriculum state, world size, ZeRO stage, seed
          config.yaml                the resolved config that wrote it
          complete                   written last
        checkpoint-000050.tmp/       a save in progress (or killed): ignored, removed by the next save
      final/                         the adapter of the last checkpoint, written by `rmt-scale export`'s
                                     code once the last stage is done

A checkpoint is written under `NAME.tmp`, renamed to `NAME` (atomic on one filesystem) and only
then marked `complete`, so a crash at any moment leaves the previous complete checkpoint as the
newest one `resume=auto` will pick. `save_checkpoint` is the one function that writes one, from
every rank; everything else here reads or tidies. DeepSpeed is imported only by that function, so
reading a run directory (export, report) does not load it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from pathlib import Path

import yaml

from rmt_scale.errors import CheckpointError, ConfigError
from rmt_scale.training.config import TrainConfig, config_from_dict

CHECKPOINTS = "checkpoints"
COMPLETE = "complete"
TRAINER_STATE = "trainer_state.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
WANDB_RUN_ID = "wandb_run_id"
DEEPSPEED_TAG = "deepspeed"
# The layout of trainer_state.json; a checkpoint written with a newer one is refused, not misread.
TRAINER_STATE_VERSION = 1
_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINTS


def checkpoint_name(global_step: int) -> str:
    return f"checkpoint-{global_step:06d}"


def is_complete(path: Path) -> bool:
    return (path / COMPLETE).is_file() and (path / TRAINER_STATE).is_file()


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_dir() and is_complete(path):
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = complete_checkpoints(output_dir)
    return found[-1] if found else None


def resolve_resume(resume: str, output_dir: str | Path) -> Path | None:
    """The checkpoint to resume from for `resume` = auto | none | a checkpoint directory."""
    if resume == "none":
        return None
    if resume == "auto":
        return latest_checkpoint(output_dir)
    path = Path(resume).expanduser()
    if not path.is_dir():
        raise ConfigError(f"resume={resume}: no such checkpoint directory")
    if not is_complete(path):
        raise ConfigError(f"resume={resume}: not a complete checkpoint (no '{COMPLETE}' marker "
                          f"or {TRAINER_STATE}); use resume=auto to pick the newest complete one")
    return path


def checkpoint_paths(output_dir: str | Path, global_step: int) -> tuple[Path, Path]:
    """(temporary dir, final dir) of the checkpoint at `global_step`."""
    final = checkpoint_root(output_dir) / checkpoint_name(global_step)
    return final.with_name(f"{final.name}.tmp"), final


def start_checkpoint(output_dir: str | Path, global_step: int) -> None:
    """Make room for a new checkpoint: the root exists, a stale temporary dir is gone.

    Call on rank 0 only, before the ranks write into the temporary dir.
    """
    checkpoint_root(output_dir).mkdir(parents=True, exist_ok=True)
    tmp, _ = checkpoint_paths(output_dir, global_step)
    shutil.rmtree(tmp, ignore_errors=True)


def finish_checkpoint(tmp: Path, final: Path, trainer_state: dict, config_yaml: str) -> None:
    """Add the trainer state and config, rename into place, mark complete (rank 0 only)."""
    state = {"version": TRAINER_STATE_VERSION, **trainer_state}
    _write_synced(tmp / TRAINER_STATE, json.dumps(state, indent=2) + "\n")
    _write_synced(tmp / CONFIG_FILE, config_yaml)
    if final.exists():  # an earlier launch stopped at the same step: replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_synced(final / COMPLETE, "")
    _sync_dir(final.parent)


def prune_checkpoints(output_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` complete checkpoints (0 keeps all)."""
    if keep_last <= 0:
        return
    for path in complete_checkpoints(output_dir)[:-keep_last]:
        # Unmark first: a crash while deleting must not leave a half-deleted "complete" one.
        (path / COMPLETE).unlink(missing_ok=True)
        shutil.rmtree(path, ignore_errors=True)


def save_checkpoint(engine, output_dir: str | Path, global_step: int, trainer_state: dict,
                    config_yaml: str, keep_last: int) -> Path:
    """Write checkpoint-NNNNNN of `global_step` from every rank (call it on all of them).

        rank 0       make room: the checkpoints root exists, a stale NAME.tmp is gone
        every rank   DeepSpeed engine state (trainable weights + optimizer) into NAME.tmp/deepspeed
        rank 0       trainer state + config, rename to NAME, mark complete, prune old ones

    Each rank-0 part ends in a collective that carries its error to every rank, so a failed save
    stops all ranks with the same message instead of leaving them waiting.

    Returns:
        The complete checkpoint directory.
    """
    from rmt_scale import distributed  # here, not at the top: see the module docstring

    tmp, final = checkpoint_paths(output_dir, global_step)
    distributed.on_rank0(lambda: start_checkpoint(output_dir, global_step), catch=(OSError,),
                         prefix=f"{tmp}: cannot start the checkpoint: ")
    distributed.save_checkpoint(engine, tmp, DEEPSPEED_TAG)
    distributed.barrier()

    def finish() -> None:
        finish_checkpoint(tmp, final, trainer_state, config_yaml)
        prune_checkpoints(output_dir, keep_last)

    distributed.on_rank0(finish, catch=(OSError,), prefix=f"{final}: cannot finish the checkpoint: ")
    return final


def read_trainer_state(checkpoint: Path) -> dict:
    """The trainer state of a complete checkpoint; unreadable or newer-format ones are refused."""
    path = checkpoint / TRAINER_STATE
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable trainer state ({err})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a trainer state (a JSON object)")
    version = state.get("version", TRAINER_STATE_VERSION)
    if not isinstance(version, int) or version > TRAINER_STATE_VERSION:
        raise CheckpointError(f"{path}: trainer state version {version!r} is newer than this rmt-scale "
                              f"reads ({TRAINER_STATE_VERSION}); upgrade rmt-scale to resume or export it")
    return state


def read_checkpoint_config(checkpoint: Path) -> TrainConfig:
    """The resolved training config a checkpoint was written with (its config.yaml)."""
    file = checkpoint / CONFIG_FILE
    try:
        return config_from_dict(yaml.safe_load(file.read_text()) or {})
    except (OSError, yaml.YAMLError) as err:
        raise CheckpointError(f"{file}: unreadable training config ({err})") from None
    except ConfigError as err:
        raise CheckpointError(f"{file}: {err}") from None


def wandb_run_id(output_dir: str | Path) -> str:
    """The id of the W&B run this run directory logs to, created (and kept) the first time.

    Every later launch (a resume, the next stage) reads the same id, so W&B continues one run
    instead of starting a new one per launch. Call on rank 0 only.
    """
    path = Path(output_dir) / WANDB_RUN_ID
    if path.is_file():
        run_id = path.read_text().strip()
        if run_id:
            return run_id
    run_id = secrets.token_hex(8)  # W&B ids: lowercase letters and digits
    tmp = path.with_name(f"{WANDB_RUN_ID}.tmp")
    _write_synced(tmp, run_id + "\n")
    os.replace(tmp, path)
    return run_id


def truncate_metrics(output_dir: str | Path, global_step: int) -> None:
    """Drop metric records past `global_step` (written by a run that died after its last
    checkpoint), so the resumed run's records continue the file without duplicates."""
    path = Path(output_dir) / METRICS_FILE
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the crash
        if record.get("step", 0) <= global_step:
            kept.append(line)
    _write_synced(path, "".join(f"{line}\n" for line in kept))


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _sync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
