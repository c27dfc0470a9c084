"""The files of a training run: checkpoint directories, trainer state, metrics (no DeepSpeed here).

    output_dir/
      config.yaml                    resolved config of the latest launch
      metrics.jsonl                  one JSON record per logged step / evaluation (rank 0)
      tensorboard/                   event files
      checkpoints/
        checkpoint-000040/           complete: has the `complete` marker
          deepspeed/                 engine.save_checkpoint (trainable weights + optimizer state)
          trainer_state.json         curriculum state, world size, ZeRO stage, seed
          config.yaml                the resolved config that wrote it
          complete                   written last
        checkpoint-000050.tmp/       a save in progress (or killed): ignored, removed by the next save
      final/                         exported adapter + memory (rmt_scale.model.saving layout)

A checkpoint is written under `NAME.tmp`, renamed to `NAME` (atomic on one filesystem) and only
then marked `complete`, so a crash at any moment leaves the previous complete checkpoint as the
newest one `resume=auto` will pick.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from rmt_scale.errors import ConfigError

CHECKPOINTS = "checkpoints"
COMPLETE = "complete"
TRAINER_STATE = "trainer_state.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
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
    _write_synced(tmp / TRAINER_STATE, json.dumps(trainer_state, indent=2) + "\n")
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


def read_trainer_state(checkpoint: Path) -> dict:
    path = checkpoint / TRAINER_STATE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: unreadable trainer state ({err})") from None


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
