"""Loading bases and tokenizers from local directories, the same way for every caller.

One table of dtype names, one device rule, one list of tokenizer files, one tokenizer lookup, one
pad-id rule, and one place that calls `from_pretrained` for a causal LM, so that
`trust_remote_code` is off everywhere unless a caller passes the user's explicit request.

A model may also be named by its Hugging Face id (`HuggingFaceTB/SmolLM2-135M-Instruct`) when it
is in the local Hub cache ($HF_HUB_CACHE, default ~/.cache/huggingface/hub): `resolve_model_dir`
turns the id into its snapshot directory without any network access, so everything after it
reads a directory as before. A plain name (`SmolLM2-135M-Instruct`) not in the Hub cache is looked
up in rmt-scale's own models home ($RMT_SCALE_HOME/models, where `rmt-scale fetch-default` imports
the default checkpoint); adapters built on a base from either cache record its id or name, so they
load on any machine that has it.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from rmt_scale.errors import AdapterError, ConfigError, InputError, RMTScaleError, first_line
from rmt_scale.resources import models_home

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# The files of a Hugging Face tokenizer; whichever of them a directory has are copied with an adapter.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "added_tokens.json", "chat_template.jinja",
                   "chat_template.json", "generation_config.json")
# Any one of these makes a directory a tokenizer source.
_TOKENIZER_MARKERS = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
# A Hub model id: `name` or `org/name` (what `huggingface_hub` accepts as a repo id).
_MODEL_ID = re.compile(r"[\w][\w.-]*(/[\w][\w.-]*)?")


def cached_model_dir(model_id: str) -> Path | None:
    """The local directory of model `model_id`, or None: the snapshot of a Hub id in the local
    Hub cache, else (for a plain name without `/`) a checkpoint of that name in :func:`models_home`.

    Never touches the network (`local_files_only`): the id's `refs/main` names the snapshot.
    """
    if not _MODEL_ID.fullmatch(str(model_id)):
        return None
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(model_id), local_files_only=True))
    except (OSError, ValueError):  # LocalEntryNotFoundError is an OSError, HFValidationError a ValueError
        pass
    home = models_home() / str(model_id)
    return home if "/" not in str(model_id) and (home / "config.json").is_file() else None


def hub_cache_dir() -> str:
    """The local Hugging Face Hub cache that model ids are looked up in."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def model_id_of(name_or_path: str | Path | None) -> str | None:
    """`name_or_path` when it names a model by its Hub id or its name in :func:`models_home` (not a
    local path), else None.

    What an adapter records as its base: an id or name stays valid on any machine with that model
    cached, where an absolute path would not.
    """
    if name_or_path is None or Path(name_or_path).expanduser().exists():
        return None
    return str(name_or_path) if cached_model_dir(str(name_or_path)) is not None else None


def portable_model_name(path: str | Path) -> str | None:
    """What an adapter records for a base at `path` so that it loads on other machines: the Hub id
    of a current Hub-cache snapshot, or the name of a checkpoint directly in :func:`models_home`."""
    model_id = snapshot_model_id(path)
    if model_id is not None:
        return model_id
    directory = Path(path).expanduser()
    try:
        in_home = directory.resolve().parent == models_home().resolve()
    except OSError:
        return None
    return directory.name if in_home and cached_model_dir(directory.name) == models_home() / directory.name else None


def snapshot_model_id(path: str | Path) -> str | None:
    """`org/name` when `path` is the current snapshot of that model in the local Hub cache
    (`.../models--org--name/snapshots/<commit>` that `refs/main` points to), else None."""
    parts = Path(path).expanduser().parts
    if len(parts) < 3 or parts[-2] != "snapshots" or not parts[-3].startswith("models--"):
        return None
    model_id = parts[-3][len("models--"):].replace("--", "/")
    current = cached_model_dir(model_id)
    # Another revision than the one `refs/main` names stays a path: the id would load a different one.
    return model_id if current is not None and current.resolve() == Path(path).expanduser().resolve() else None


def resolve_model_dir(name_or_path: str | Path, what: str = "model",
                      error: type[RMTScaleError] = AdapterError) -> Path:
    """The local directory of a checkpoint given as a directory or a Hub id in the local cache.

    Args:
        name_or_path: A directory (`~` expanded) or a model id such as `org/name`.
        what: How the message names it (`model.path`, `--base`, ...).
        error: The error class raised.

    Raises:
        AdapterError: (or `error`) Neither a directory nor an id in the local cache.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    snapshot = cached_model_dir(str(name_or_path))
    if snapshot is not None:
        return snapshot
    if path.exists():
        raise error(f"{what} {name_or_path}: a file, not a checkpoint directory")
    if _MODEL_ID.fullmatch(str(name_or_path)):
        raise error(f"{what} {name_or_path}: no such directory, and no model of that id in the local "
                    f"Hugging Face cache ({hub_cache_dir()}) or of that name in {models_home()}; nothing "
                    f"is downloaded: fetch it first (huggingface-cli download {name_or_path}, or "
                    f"`rmt-scale fetch-default` for SmolLM2-135M-Instruct) or pass a checkpoint directory")
    raise error(f"{what} {name_or_path}: no such directory")


def parse_dtype(name: str | None, what: str = "dtype") -> torch.dtype | None:
    """`"bfloat16"` -> torch.bfloat16; None stays None (the checkpoint's own dtype)."""
    if name is None or name == "auto":
        return None
    if name not in DTYPES:
        raise ConfigError(f"unknown {what} {name!r}; choose from {', '.join(DTYPES)}")
    return DTYPES[name]


def parse_device(name: str | torch.device | None) -> torch.device:
    """`"auto"` (or None) -> CUDA when there is one, else CPU; `"cpu"`, `"cuda"`, `"cuda:N"` as given.

    Raises:
        InputError: Not a device name, or a CUDA device this machine does not have.
    """
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise InputError(f"unknown device {str(name)!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"device {str(name)!r}: no CUDA device is available here; use cpu")
        if device.index is not None and device.index >= count:
            raise InputError(f"device {str(name)!r}: this machine has {count} CUDA device(s), "
                             f"cuda:0 .. cuda:{count - 1}")
    return device


def has_tokenizer(path: str | Path | None) -> bool:
    return path is not None and any((Path(path) / name).is_file() for name in _TOKENIZER_MARKERS)


def needs_remote_code(path: str | Path) -> bool:
    """Whether a checkpoint directory names Python code of its own (`auto_map` in config.json or
    tokenizer_config.json) that transformers would have to run to load it."""
    import json

    for name in ("config.json", "tokenizer_config.json"):
        try:
            values = json.loads((Path(path) / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(values, dict) and values.get("auto_map"):
            return True
    return False


def describe_load_error(path: str | Path, err: BaseException, trust_remote_code: bool) -> str:
    """Why a checkpoint did not load, in a line: its own code that was not run, or transformers'
    first line."""
    if not trust_remote_code and needs_remote_code(path):
        return ("its architecture is Python code shipped in the directory (auto_map), which rmt-scale "
                "does not run; pass --trust-remote-code (model.trust_remote_code: true) if you trust it")
    return first_line(err)


def load_tokenizer(*candidates: str | Path | None, trust_remote_code: bool = False):
    """The tokenizer of the first candidate directory (or model id in the local Hub cache) that
    has one, left-padding.

    Raises:
        AdapterError: None of the candidates holds tokenizer files, or they do not load.
    """
    from transformers import AutoTokenizer

    for candidate in candidates:
        if candidate is not None and not Path(candidate).expanduser().exists():
            candidate = cached_model_dir(str(candidate)) or candidate
        if has_tokenizer(candidate):
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(candidate), trust_remote_code=trust_remote_code)
            except (OSError, ValueError, KeyError) as err:
                raise AdapterError(f"{candidate}: the tokenizer files do not load "
                                   f"({describe_load_error(candidate, err, trust_remote_code)})") from None
            tokenizer.padding_side = "left"
            return tokenizer
    shown = ", ".join(str(c) for c in candidates if c is not None) or "nowhere"
    raise AdapterError(f"no tokenizer found (looked in {shown}); pass a directory that has tokenizer.json")


def pad_token_id(tokenizer=None, lm: nn.Module | None = None) -> int:
    """The id batches are padded with: the tokenizer's pad, the model's pad, then eos, then 0."""
    generation = getattr(lm, "generation_config", None)
    candidates = (getattr(tokenizer, "pad_token_id", None), getattr(generation, "pad_token_id", None),
                  getattr(tokenizer, "eos_token_id", None), getattr(generation, "eos_token_id", None))
    for value in candidates:
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    return 0


def load_causal_lm(source: str | Path, trust_remote_code: bool = False, *,
                   error: type[RMTScaleError] = AdapterError, **kwargs) -> nn.Module:
    """`AutoModelForCausalLM.from_pretrained` on a local directory, remote code off by default.

    Args:
        source: The checkpoint directory, or a model id in the local Hub cache.
        trust_remote_code: Run the checkpoint's own modelling code; only on the user's request.
        error: What a checkpoint that does not load raises (a GGUF import raises GGUFError).
        kwargs: Passed to `from_pretrained` (dtype, device_map, gguf_file, ...).

    Raises:
        AdapterError: (or `error`) The directory is missing or the checkpoint does not load.
    """
    from transformers import AutoModelForCausalLM

    path = resolve_model_dir(source, "base checkpoint", error)
    try:
        return AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError, KeyError, NotImplementedError) as err:
        # NotImplementedError: an architecture or GGUF quantization transformers cannot read.
        shown = path / kwargs["gguf_file"] if kwargs.get("gguf_file") else path
        raise error(f"{shown}: cannot load the checkpoint ({describe_load_error(path, err, trust_remote_code)})"
                    ) from None
