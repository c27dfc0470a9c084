"""Memory-state files: one safetensors file per state, pinned to the model that read it.

    tensors   memory      (M, D), the model's dtype: memory after every full segment
              tail_ids    (t,) int64: the unread tail (rmt_scale/model/memory_state.py says why)
    metadata  format "rmt-scale-memory-state", format_version "1"
              tokens_read, sources (JSON list of {"name", "sha256", "tokens"}), created, updated
              rmt_config (JSON), dtype, base_fingerprint, adapter_sha256, memory_sha256,
              tokenizer_sha256: the identity of the model that read it (ModelIdentity)
              tensors_sha256: checksum of both tensors' bytes

Loading checks the file (format, checksum, shapes) and then the identity against the model at
hand, and raises MemoryStateError naming the first thing that differs: a state is only meaningful
to the exact adapter, base, dtype, tokenizer and segmenting that produced it, and any other model
would answer from it without complaint, wrongly. Files are written atomically (temporary file in
the same directory, fsync, rename), so a reader never sees half a state.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from rmt_scale.config import RMTConfig
from rmt_scale.errors import MemoryStateError
from rmt_scale.model.memory import unwrap_causal_lm
from rmt_scale.model.memory_state import MemoryState

FORMAT = "rmt-scale-memory-state"
FORMAT_VERSION = "1"
# A state is a few kilobytes to a few megabytes (M x D plus under one segment of ids); anything far
# larger is not one, and is refused before it is read into memory.
MAX_STATE_BYTES = 256 * 1024 * 1024
# Values sampled from each base weight for its fingerprint: enough that two different checkpoints
# never agree, while hashing every weight of a 7B base would take tens of seconds at each start.
FINGERPRINT_SAMPLES = 4096
# The settings that change what reading computes; the others (bptt_depth, checkpointing,
# memory_init_std) only matter in training, and the trained memory itself is hashed in full.
READING_FIELDS = ("num_mem_tokens", "segment_size", "memory_norm")
# Settings added later: part of the identity only when set to other than their default (what they
# were, in effect, before they existed), so states saved earlier stay valid.
OPTIONAL_READING_FIELDS = ("sink_token", "write_inputs", "write_exclude_special")


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _sha256(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor_bytes(tensor))
    return digest.hexdigest()


def tokenizer_sha256(tokenizer) -> str:
    """Hash of what maps text to ids: the fast tokenizer's definition (without its runtime padding
    and truncation settings), or the vocabulary and special tokens of a slow one."""
    if tokenizer is None:
        return ""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = json.loads(backend.to_str())
        definition.pop("padding", None)
        definition.pop("truncation", None)
    else:
        definition = {"vocab": sorted(tokenizer.get_vocab().items()),
                      "special": sorted(map(str, tokenizer.all_special_tokens))}
    text = json.dumps(definition, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ModelIdentity:
    """What a memory state is valid for, computed once per loaded model.

    Attributes:
        rmt_config: The RMT settings that change reading (READING_FIELDS), as canonical JSON.
        dtype: The memory's dtype name ("bfloat16").
        base_fingerprint: sha256 over each base weight's name, shape, dtype and FINGERPRINT_SAMPLES
            evenly spaced values (LoRA weights excluded).
        adapter_sha256: sha256 of every PEFT adapter weight in full; "" without an adapter.
        memory_sha256: sha256 of the trained initial memory in full.
        tokenizer_sha256: tokenizer_sha256() of the tokenizer used; "" when ids were read directly.
    """

    rmt_config: str
    dtype: str
    base_fingerprint: str
    adapter_sha256: str
    memory_sha256: str
    tokenizer_sha256: str

    @classmethod
    def of(cls, model, tokenizer=None) -> ModelIdentity:
        """The identity of a RecurrentMemoryModel (and the tokenizer its text goes through)."""
        settings = {name: getattr(model.config, name) for name in READING_FIELDS}
        defaults = {setting.name: setting.default for setting in fields(RMTConfig)}
        settings |= {name: getattr(model.config, name) for name in OPTIONAL_READING_FIELDS
                     if getattr(model.config, name) != defaults[name]}
        adapter = {}
        if hasattr(model.base, "peft_config"):
            from peft import get_peft_model_state_dict

            adapter = get_peft_model_state_dict(model.base)
        adapter_storage = {tensor.data_ptr() for tensor in adapter.values()}
        base = hashlib.sha256()
        for name, weight in unwrap_causal_lm(model.base).named_parameters():
            if weight.data_ptr() in adapter_storage:
                continue
            flat = weight.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // FINGERPRINT_SAMPLES)][:FINGERPRINT_SAMPLES]
            base.update(f"{name}|{tuple(weight.shape)}|{weight.dtype}".encode())
            base.update(tensor_bytes(sample))
        return cls(
            rmt_config=json.dumps(settings, sort_keys=True),
            dtype=str(model.memory.dtype).removeprefix("torch."),
            base_fingerprint=base.hexdigest(),
            adapter_sha256=_sha256(*(adapter[key] for key in sorted(adapter))) if adapter else "",
            memory_sha256=_sha256(model.memory),
            tokenizer_sha256=tokenizer_sha256(tokenizer),
        )


def mismatch(saved: dict[str, str], current: ModelIdentity) -> str | None:
    """Why a state with identity `saved` does not fit `current`, or None when it does."""
    if saved.get("rmt_config") != current.rmt_config:
        try:
            theirs = json.loads(saved.get("rmt_config", "{}"))
        except json.JSONDecodeError:
            theirs = {}
        ours = json.loads(current.rmt_config)
        differ = ", ".join(f"{k}={theirs.get(k)} (this model: {ours[k]})" for k in ours if theirs.get(k) != ours[k])
        return f"it was read with another RMT config: {differ}"
    if saved.get("dtype") != current.dtype:
        return (f"it was read in {saved.get('dtype')} but this model runs in {current.dtype}; "
                f"load the model with --dtype {saved.get('dtype')}")
    if saved.get("base_fingerprint") != current.base_fingerprint:
        return "it was read with another base model (its weights differ); use the base it was read with"
    if saved.get("adapter_sha256") != current.adapter_sha256:
        return "it was read with another LoRA adapter; use the adapter it was read with"
    if saved.get("memory_sha256") != current.memory_sha256:
        return "it was read with another adapter's memory; use the adapter it was read with"
    if saved.get("tokenizer_sha256") != current.tokenizer_sha256:
        return "it was read with another tokenizer; use the tokenizer it was read with"
    return None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def source_record(name: str, text: str, num_tokens: int) -> dict:
    """The entry `save_state` keeps for one text read into a state: {"name", "sha256", "tokens"}."""
    return {"name": name, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "tokens": num_tokens}


@dataclass
class StateInfo:
    """What a memory-state file says about itself (its header; no tensors)."""

    tokens_read: int
    unread_tokens: int
    sources: list[dict] = field(default_factory=list)
    created: str = ""
    updated: str = ""
    identity: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def save_state(path: str | Path, state: MemoryState, identity: ModelIdentity,
               sources: list[dict], created: str | None = None) -> StateInfo:
    """Write `state` to `path` atomically, with `identity` and `sources` in its metadata.

    Args:
        sources: Everything read into the state, oldest first: {"name", "sha256", "tokens"} each.
        created: When the state was first written (kept across appends); now when None.
    """
    path = Path(path)
    memory = state.memory.detach().to("cpu").contiguous()
    tail = state.tail_ids.detach().to("cpu").contiguous()
    info = StateInfo(tokens_read=state.tokens_read, unread_tokens=tail.numel(), sources=list(sources),
                     created=created or now(), updated=now(), identity=asdict(identity))
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "tokens_read": str(state.tokens_read),
                "sources": json.dumps(info.sources), "created": info.created, "updated": info.updated,
                "tensors_sha256": _sha256(memory, tail), **info.identity}
    data = save_safetensors({"memory": memory, "tail_ids": tail}, metadata=metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return info


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise MemoryStateError(f"{path}: no such memory state file")
    size = path.stat().st_size
    if size > MAX_STATE_BYTES:
        raise MemoryStateError(f"{path}: {size:,} bytes is too large to be a memory state")
    return path.read_bytes()


def _header(path: Path, data: bytes) -> tuple[dict, dict[str, str]]:
    """The safetensors header of a state file's bytes, and its checked metadata."""
    try:
        length = int.from_bytes(data[:8], "little")
        if len(data) < 8 or 8 + length > len(data):
            raise ValueError("header runs past the end")
        header = json.loads(data[8 : 8 + length])
        metadata = (header.get("__metadata__") or {}) if isinstance(header, dict) else None
        if not isinstance(metadata, dict):
            raise ValueError("the header is not a safetensors header")
    except (ValueError, UnicodeDecodeError) as err:
        raise MemoryStateError(f"{path}: not a memory state file, or truncated ({err})") from None
    if metadata.get("format") != FORMAT:
        raise MemoryStateError(f"{path}: not a memory state file (no '{FORMAT}' marker)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise MemoryStateError(f"{path}: memory state format version {metadata.get('format_version')!r} "
                               f"is not supported (this rmt-scale reads version {FORMAT_VERSION})")
    return header, metadata


def _info(path: Path, metadata: dict[str, str], unread_tokens: int) -> StateInfo:
    try:
        sources = json.loads(metadata.get("sources", "[]"))
        tokens_read = int(metadata["tokens_read"])
    except (KeyError, ValueError) as err:
        raise MemoryStateError(f"{path}: corrupt memory state metadata ({err})") from None
    identity = {name: metadata.get(name, "") for name in ModelIdentity.__dataclass_fields__}
    return StateInfo(tokens_read=tokens_read, unread_tokens=unread_tokens, sources=sources,
                     created=metadata.get("created", ""), updated=metadata.get("updated", ""),
                     identity=identity)


def read_state_info(path: str | Path) -> StateInfo:
    """The header of a memory-state file, checked for format (the tensors are not verified)."""
    path = Path(path)
    data = _read_bytes(path)
    header, metadata = _header(path, data)
    try:
        unread_tokens = int(header["tail_ids"]["shape"][0])
    except (KeyError, IndexError, TypeError, ValueError):
        raise MemoryStateError(f"{path}: corrupt memory state (no 1-D 'tail_ids' tensor)") from None
    return _info(path, metadata, unread_tokens)


def load_state(path: str | Path, identity: ModelIdentity | None,
               device: torch.device | str = "cpu") -> tuple[MemoryState, StateInfo]:
    """Read and verify a memory-state file; with `identity`, check that it fits that model.

    Raises:
        MemoryStateError: Missing, truncated, corrupt, of another format version, or read by
            another model (the message says which part of the identity differs).
    """
    path = Path(path)
    data = _read_bytes(path)
    _, metadata = _header(path, data)
    try:
        tensors = load_safetensors(data)
    except SafetensorError as err:
        raise MemoryStateError(f"{path}: unreadable or truncated memory state ({err})") from None
    memory, tail = tensors.get("memory"), tensors.get("tail_ids")
    if memory is None or tail is None:
        raise MemoryStateError(f"{path}: corrupt memory state (needs 'memory' and 'tail_ids' tensors)")
    if _sha256(memory, tail) != metadata.get("tensors_sha256"):
        raise MemoryStateError(f"{path}: corrupt memory state (its tensors do not match their checksum)")
    info = _info(path, metadata, tail.numel())
    try:
        state = MemoryState(memory.to(device), tail.to(device), info.tokens_read)
    except MemoryStateError as err:
        raise MemoryStateError(f"{path}: corrupt memory state ({err})") from None
    if identity is not None:
        reason = mismatch(metadata, identity)
        if reason is not None:
            raise MemoryStateError(f"{path}: this memory state does not fit the model: {reason}")
    return state, info
