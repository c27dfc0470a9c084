"""Writing output directories without losing anyone's files.

`atomic_directory` replaces a directory whole and only when its new content is complete, with the
user's usual file modes; `refuse_to_replace` is the check made before it, so that no command
replaces a directory holding its own input, the current directory, or (without the user's
`--overwrite`) a non-empty directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from rmt_scale.errors import InputError


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _apply_umask(root: Path) -> None:
    """Give everything under `root` the modes a plain `open`/`mkdir` would have.

    mkdtemp makes a private (0700) directory and safetensors writes 0600 files; an adapter or
    checkpoint is meant to be shared like any other file its user writes.
    """
    umask = _current_umask()
    os.chmod(root, 0o777 & ~umask)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            if not os.path.islink(os.path.join(folder, name)):
                os.chmod(os.path.join(folder, name), 0o777 & ~umask)
        for name in files:
            if not os.path.islink(os.path.join(folder, name)):
                os.chmod(os.path.join(folder, name), 0o666 & ~umask)


@contextmanager
def atomic_directory(path: str | Path):
    """Yield a temporary directory that replaces `path` only if the block finishes.

    The temporary directory sits beside `path` (same filesystem), so the final rename is atomic;
    an existing `path` is moved aside first and deleted only after the new one is in place. Files
    and folders get the user's usual modes (umask) before the rename. On any failure (in the block
    or in the renames) the temporary directory is removed and an existing `path` is put back.
    """
    # Absolute, so that "." or "out/" has a real name and parent: the temporary directory must
    # sit beside the target, never inside it.
    path = Path(os.path.abspath(path))
    if path == path.parent:
        raise InputError(f"{path}: cannot replace the root directory; pass a directory below it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    old = None
    try:
        yield tmp
        _apply_umask(tmp)
        if os.path.lexists(path):
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not os.path.lexists(path):
            os.replace(old, path)  # the rename into place failed: the previous one comes back
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def refuse_to_replace(path: str | Path, overwrite: bool = False, inputs: Sequence[str | Path | None] = (),
                      flag: str = "--overwrite") -> Path:
    """Check that a directory about to be written at `path` loses nobody's files.

    Args:
        path: The output directory (written with `atomic_directory`, which replaces it whole).
        overwrite: The user asked to replace an existing, non-empty `path`.
        inputs: Files or directories the command reads (None: an optional input not given);
            `path` must neither be one of them nor contain one, even with `overwrite`: replacing
            it would delete the input.
        flag: The option that allows replacing, for the message.

    Raises:
        InputError: `path` is, or contains, an input; or it exists (a file, or a non-empty
            directory) and `overwrite` is not set.
    """
    path = Path(path).expanduser()
    target = Path(os.path.realpath(path))
    for source in (source for source in inputs if source is not None):
        resolved = Path(os.path.realpath(Path(source).expanduser()))
        if resolved == target or target in resolved.parents:
            relation = "is" if resolved == target else "holds"
            raise InputError(f"{path} {relation} the input {source}; writing there would delete that input, "
                             "so choose another output directory")
    cwd = Path(os.path.realpath(os.getcwd()))
    if target == cwd or target in cwd.parents:
        # Replaced by a rename, it would leave the shell in a deleted folder.
        raise InputError(f"{path} is the current directory (or holds it); pass the name of a new "
                         "directory to write, e.g. ./model")
    if os.path.lexists(path) and not overwrite:
        if not path.is_dir():
            raise InputError(f"{path} is a file, not a directory; remove it or choose another output "
                             f"directory ({flag} replaces it)")
        if any(path.iterdir()):
            raise InputError(f"{path} exists and is not empty; pass {flag} to replace it, or choose "
                             "another output directory")
    return path
