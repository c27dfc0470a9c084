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
          manifest.json              size and sha256 of every file above
          complete                   written last
        checkpoint-000050.tmp/       a save in progress (or killed): ignored, removed by the next save
      final/                         the adapter of the last checkpoint, written by `rmt-scale export`'s
                                     code once the last stage is done

A checkpoint is written under `NAME.tmp`, renamed to `NAME` (atomic on one filesystem) and only
then marked `complete`, so a crash at any moment leaves the previous complete checkpoint as the
newest one `resume=auto` will pick. Its manifest catches what the marker cannot (a file damaged
after the save): resume and export verify it, and resume=auto falls back to the previous complete
checkpoint when the newest fails, saying so. `save_checkpoint` is the one function that writes one, from
every rank; everything else here reads or tidies. DeepSpeed is imported only by that function, so
reading a run directory (export, report) does not load it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

import yaml

from rmt_scale.errors import CheckpointError, ConfigError, RankZeroError
from rmt_scale.training.config import TrainConfig, config_from_dict

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
COMPLETE = "complete"
TRAINER_STATE = "trainer_state.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
WANDB_RUN_ID = "wandb_run_id"
DEEPSPEED_TAG = "deepspeed"
MANIFEST = "manifest.json"
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


def resolve_resume(resume: str, output_dir: str | Path,
                   check: Callable[[Path], None] | None = None) -> Path | None:
    """The checkpoint to resume from for `resume` = auto | none | a checkpoint directory.

    Args:
        resume: auto (the newest usable checkpoint, or None), none, or a checkpoint directory.
        output_dir: The run directory.
        check: Raises CheckpointError for a checkpoint that must not be loaded; default
            `verify_checkpoint`. With auto, a failing newest checkpoint falls back to the one
            before it; a checkpoint named by path must pass.
    """
    check = check or verify_checkpoint
    if resume == "none":
        return None
    if resume == "auto":
        try:
            return usable_checkpoint(output_dir, check, "resuming from")
        except CheckpointError as err:
            raise CheckpointError(f"{err}: resume=none in a new output_dir starts over") from None
    path = Path(resume).expanduser()
    if not path.is_dir():
        raise ConfigError(f"resume={resume}: no such checkpoint directory")
    if not is_complete(path):
        raise ConfigError(f"resume={resume}: not a complete checkpoint (no '{COMPLETE}' marker "
                          f"or {TRAINER_STATE}); use resume=auto to pick the newest complete one")
    try:
        check(path)
    except CheckpointError as err:
        raise CheckpointError(f"resume={resume}: {err}; resume from an earlier checkpoint "
                              "(or resume=auto, which picks the newest usable one)") from None
    return path


def usable_checkpoint(output_dir: str | Path, check: Callable[[Path], None] | None = None,
                      action: str = "using") -> Path | None:
    """The newest complete checkpoint that passes `check` (default `verify_checkpoint`).

    Each one that fails is skipped with a warning naming the problem and the checkpoint used
    instead. None when there is no complete checkpoint at all.

    Raises:
        CheckpointError: Complete checkpoints exist but none passes (the newest one's problem).
    """
    check = check or verify_checkpoint
    found = complete_checkpoints(output_dir)
    problems: list[str] = []
    for path in reversed(found):
        try:
            check(path)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        for problem in problems:
            logger.warning("%s; falling back to the previous complete checkpoint", problem)
        if problems:
            logger.warning("%s %s instead of the newest checkpoint, which cannot be used", action, path.name)
        return path
    if problems:
        others = f" (and the {len(problems) - 1} earlier one(s) fail too)" if len(problems) > 1 else ""
        raise CheckpointError(f"{problems[0]}{others}; no usable checkpoint is left in {checkpoint_root(output_dir)}")
    return None


def write_manifest(checkpoint: Path) -> None:
    """Record the size and sha256 of every file of a checkpoint (rank 0, before it is marked
    complete)."""
    files = {}
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file()):
        name = path.relative_to(checkpoint).as_posix()
        if name in (MANIFEST, COMPLETE):
            continue
        files[name] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    _write_synced(checkpoint / MANIFEST, json.dumps({"version": 1, "files": files}, indent=1) + "\n")


def verify_checkpoint(checkpoint: Path) -> None:
    """Check a complete checkpoint against its manifest: every file present, of its size and
    checksum. Checkpoints written before manifests existed (no "manifest" in their trainer
    state) pass unchecked.

    Raises:
        CheckpointError: Naming the first file that is missing, cut or changed.
    """
    state = read_trainer_state(checkpoint)
    manifest_path = checkpoint / MANIFEST
    if not manifest_path.is_file():
        if "manifest" not in state:
            return
        raise CheckpointError(f"{checkpoint.name}: {MANIFEST} is missing; the checkpoint is damaged")
    try:
        files = json.loads(manifest_path.read_text())["files"]
        entries = [(name, int(entry["size"]), str(entry["sha256"])) for name, entry in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{manifest_path}: unreadable manifest ({err}); the checkpoint is damaged") from None
    for name, size, digest in entries:
        path = checkpoint / name
        if ".." in Path(name).parts or not path.is_file():
            raise CheckpointError(f"{checkpoint.name}: {name} is missing; the checkpoint is damaged")
        actual = path.stat().st_size
        if actual != size:
            raise CheckpointError(f"{checkpoint.name}: {name} is {actual} bytes, the manifest says {size}; "
                                  "the checkpoint is damaged (truncated?)")
        if _sha256(path) != digest:
            raise CheckpointError(f"{checkpoint.name}: {name} does not match its checksum in {MANIFEST}; "
                                  "the checkpoint is damaged")


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


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
    # "manifest" says one must be there: checkpoints from before manifests existed have neither.
    state = {"version": TRAINER_STATE_VERSION, **trainer_state, "manifest": MANIFEST}
    _write_synced(tmp / TRAINER_STATE, json.dumps(state, indent=2) + "\n")
    _write_synced(tmp / CONFIG_FILE, config_yaml)
    write_manifest(tmp)  # last: it covers every file above
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
        rank 0       trainer state + config + manifest, rename to NAME, mark complete, prune old ones

    Each rank-0 part ends in a collective that carries its error to every rank, and a write that
    fails on any rank is reported to all of them after DeepSpeed's save (distributed.save_checkpoint),
    so a failed save stops all ranks with the same one-line CheckpointError ("disk full while
    saving ...; free space and resume") instead of leaving them waiting; the partial NAME.tmp is
    removed and the earlier checkpoints are untouched.

    Returns:
        The complete checkpoint directory.
    """
    from rmt_scale import distributed  # here, not at the top: see the module docstring

    tmp, final = checkpoint_paths(output_dir, global_step)

    def on_disk(work, what: str):
        def run() -> None:
            try:
                work()
            except OSError as err:
                raise CheckpointError(f"disk full while saving {final}" if distributed.is_disk_full(err)
                                      else f"{tmp}: cannot {what} the checkpoint: {err}") from None
        return run

    def finish() -> None:
        finish_checkpoint(tmp, final, trainer_state, config_yaml)
        prune_checkpoints(output_dir, keep_last)

    try:
        distributed.on_rank0(on_disk(lambda: start_checkpoint(output_dir, global_step), "start"),
                             catch=(CheckpointError,))
        distributed.save_checkpoint(engine, tmp, DEEPSPEED_TAG)
        distributed.barrier()
        distributed.on_rank0(on_disk(finish, "finish"), catch=(CheckpointError,))
    except (CheckpointError, RankZeroError) as err:
        # The partial save is of no use and holds the space a full disk needs back; the earlier
        # checkpoints were never touched.
        distributed.on_rank0(lambda: shutil.rmtree(tmp, ignore_errors=True), catch=(OSError,))
        previous = latest_checkpoint(output_dir)
        fix = "free space and resume" if str(err).startswith("disk full") else "fix that and resume"
        where = (f"resume=auto continues from {previous.name}, which is intact" if previous is not None
                 else "there is no earlier checkpoint")
        raise CheckpointError(f"{err}; {fix} ({where})") from None
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
