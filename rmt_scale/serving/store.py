"""The server's memories: one memory-state file per memory id in one directory.

    memory_dir/
      <id>.safetensors      a memory state (state.py), written atomically

Ids are names a client may choose (letters, digits, '.', '_', '-'; no path separators, so an id
can never name a file outside the directory) or that the server draws at random. Server-side
documents are read only from inside an allowed directory, after resolving symbolic links.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from rmt_scale.errors import InputError, MemoryStateError
from rmt_scale.model.memory_state import MemoryState
from rmt_scale.serving.state import (
    ModelIdentity,
    StateInfo,
    load_state,
    mismatch,
    read_state_info,
    save_state,
)

SUFFIX = ".safetensors"
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class MemoryNotFound(InputError):
    """No memory of that id."""


class MemoryExists(InputError):
    """A memory of that id exists already (creating never overwrites)."""


class MemoryStore:
    """Memory states of one model in `directory`.

    Not safe for concurrent writers to one id: the server runs every write in its single model
    worker, one after the other.
    """

    def __init__(self, directory: str | Path, identity: ModelIdentity):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.identity = identity

    @staticmethod
    def check_id(memory_id: str) -> str:
        if not isinstance(memory_id, str) or not ID_PATTERN.fullmatch(memory_id):
            raise InputError(f"memory id {str(memory_id)[:80]!r} is not valid: use 1-64 letters, digits, "
                             "'.', '_' or '-', starting with a letter or digit")
        return memory_id

    def path(self, memory_id: str) -> Path:
        return self.directory / f"{self.check_id(memory_id)}{SUFFIX}"

    def new_id(self) -> str:
        while True:  # 48 random bits: a clash is astronomically rare, and then we draw again
            memory_id = f"mem-{secrets.token_hex(6)}"
            if not self.path(memory_id).exists():
                return memory_id

    def exists(self, memory_id: str) -> bool:
        return self.path(memory_id).is_file()

    def describe(self, memory_id: str, info: StateInfo) -> dict:
        """The JSON the server returns for a memory."""
        return {"id": memory_id, "object": "memory", "tokens_read": info.tokens_read,
                "unread_tokens": info.unread_tokens, "sources": info.sources, "created": info.created,
                "updated": info.updated, "fits_model": mismatch(info.identity, self.identity) is None}

    def info(self, memory_id: str) -> StateInfo:
        path = self.path(memory_id)
        if not path.is_file():
            raise MemoryNotFound(f"no memory {memory_id!r}")
        return read_state_info(path)

    def list(self) -> list[dict]:
        """Every memory in the directory, oldest first; unreadable files are listed as such."""
        found = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            memory_id = path.name[: -len(SUFFIX)]
            if not ID_PATTERN.fullmatch(memory_id):
                continue
            try:
                found.append(self.describe(memory_id, read_state_info(path)))
            except MemoryStateError as err:
                found.append({"id": memory_id, "object": "memory", "error": str(err)})
        return sorted(found, key=lambda m: (m.get("created", ""), m["id"]))

    def load(self, memory_id: str) -> tuple[MemoryState, StateInfo]:
        """The memory's state, checked against this model."""
        path = self.path(memory_id)
        if not path.is_file():
            raise MemoryNotFound(f"no memory {memory_id!r}")
        return load_state(path, self.identity)

    def save(self, memory_id: str, state: MemoryState, sources: list[dict], created: str | None = None) -> dict:
        info = save_state(self.path(memory_id), state, self.identity, sources, created)
        return self.describe(memory_id, info)

    def delete(self, memory_id: str) -> None:
        path = self.path(memory_id)
        if not path.is_file():
            raise MemoryNotFound(f"no memory {memory_id!r}")
        path.unlink()


def allowed_file(path: str, allowed_dir: Path | None, max_bytes: int) -> Path:
    """The resolved path of a server-side document, if it lies inside `allowed_dir`.

    Relative paths are relative to `allowed_dir`. Raises InputError otherwise: reading files is off
    without an allowed directory, and neither '..' nor a symbolic link leads out of it.
    """
    if allowed_dir is None:
        raise InputError("reading server-side files is disabled; start the server with --files-dir DIR")
    root = allowed_dir.resolve()
    candidate = Path(path)
    resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if not resolved.is_relative_to(root):
        raise InputError(f"file {path!r} is outside the allowed directory")
    if not resolved.is_file():
        raise InputError(f"file {path!r} does not exist in the allowed directory")
    size = resolved.stat().st_size
    if size > max_bytes:
        raise InputError(f"file {path!r} has {size:,} bytes, over the limit of {max_bytes:,}")
    return resolved
