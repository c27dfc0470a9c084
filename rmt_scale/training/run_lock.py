"""Whose run directory this is, and who is training in it right now.

    check_output_dir(output_dir)     # every rank, in the plan: refuse a directory of the user's files
    lock = claim(output_dir)         # rank 0, once the process group exists: marker + exclusive lock
    ...                              # the whole launch, final/ export included
    lock.release()                   # (the kernel also drops it when the process ends, however)

A run writes config.yaml, metrics.jsonl, tensorboard/, checkpoints/ and final/ into its output_dir,
replacing or trimming what is there. So it writes only into a directory that is missing, empty, or
marked as a run directory by the file `.rmt-scale-run` (written when rmt-scale creates or first
claims it); a directory of the user's own files is refused. Run directories of releases before the
marker are recognised by their complete checkpoints.

The same file carries an exclusive `flock` for the whole launch on rank 0, so a second launch on the
same directory stops at once, naming the holder (host, pid), instead of interleaving its metrics and
checkpoints with the first. The lock belongs to the open file: it is released when the launch ends
in any way, a crash or `kill -9` included.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from pathlib import Path

from rmt_scale.errors import ConfigError
from rmt_scale.training.run_dir import complete_checkpoints

MARKER = ".rmt-scale-run"
_IDLE = "not in use\n"


def is_run_directory(path: Path) -> bool:
    """Whether rmt-scale made `path` a run directory (its marker, or an older release's complete
    checkpoints)."""
    return (path / MARKER).is_file() or bool(complete_checkpoints(path))


def check_output_dir(output_dir: str | Path) -> None:
    """Refuse an output_dir that holds files rmt-scale did not write (nothing is written here).

    Raises:
        ConfigError: The path is a file, or a non-empty directory that is not a run directory.
    """
    path = Path(output_dir).expanduser()
    if not path.exists():
        return
    if not path.is_dir():
        raise ConfigError(f"output_dir {path} is a file, not a directory; choose another output_dir")
    entries = sorted(entry.name for entry in path.iterdir())
    if not entries or is_run_directory(path):
        return
    shown = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")
    raise ConfigError(f"output_dir {path} holds files that rmt-scale did not write ({shown}) and a run "
                      "would overwrite some of them; choose a new or empty output_dir, or move those files away")


class RunLock:
    """The exclusive lock of one launch on its run directory (see `claim`)."""

    def __init__(self, path: Path, handle):
        self.path = path
        self._handle = handle

    @property
    def held(self) -> bool:
        return self._handle is not None

    def release(self) -> None:
        """Unlock and mark the directory idle (safe to call twice)."""
        if self._handle is None:
            return
        try:
            self._handle.seek(0)
            self._handle.truncate()
            self._handle.write(_IDLE)
            self._handle.flush()
        except OSError:
            pass  # a full disk must not keep the lock: closing releases it below
        finally:
            self._handle.close()  # closing the file drops the flock
            self._handle = None


def claim(output_dir: str | Path) -> RunLock:
    """Create (or check) the run directory, mark it, and lock it for this launch. Rank 0 only.

    Raises:
        ConfigError: The directory holds the user's files, cannot be created, or another launch
            holds the lock (the message names its host and pid).
    """
    path = Path(output_dir).expanduser()
    check_output_dir(path)  # again: the directory may have changed since the plan was made
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle = open(path / MARKER, "a+")
    except OSError as err:
        raise ConfigError(f"output_dir {path}: cannot create the run directory ({err.strerror})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise ConfigError(f"output_dir {path}: cannot lock {MARKER} ({err.strerror})") from None
        raise ConfigError(f"output_dir {path} is in use by another launch ({holder or 'holder unknown'}); "
                          "wait for it to end or stop it, or choose another output_dir") from None
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    handle.seek(0)
    handle.truncate()
    handle.write(f"held by host {socket.gethostname()}, pid {os.getpid()}, since {started}\n")
    handle.flush()
    return RunLock(path, handle)
