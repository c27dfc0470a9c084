"""Where user data comes from: files, directories, globs and datasets on disk, read as rows.

One reader for the two user kinds (long documents, long-context QA) and the official BABILong
layout. A *source* is one of:

* a file: ``.txt``/``.md`` (the whole file is one row, ``{"text": ...}``), ``.jsonl`` (one JSON
  object per line), ``.json`` (an array of objects, an object of columns, or JSON lines),
  ``.parquet``;
* a directory: a ``datasets`` dataset written by ``save_to_disk``, else every such file in it
  (recursively, in sorted order);
* a glob (``books/*.txt``, ``data/**/*.parquet``);
* a dataset name (``org/name``, optionally ``org/name:config`` or ``org/name:config:split``) that is
  in the local Hugging Face cache. Nothing is downloaded: the Hub cache snapshot is read if there is
  one, else ``datasets.load_dataset`` runs in offline mode (its prepared Arrow cache).

Every row carries a location, ``file:row`` (the line number for ``.jsonl``, the 1-based row for
the other tables), which every error about that row names.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmt_scale.data.caching import file_stamps
from rmt_scale.data.text import read_utf8
from rmt_scale.errors import DataError

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".md")
TABLE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet")
# A Hub dataset id, with an optional ":config" and ":split".
_NAME_RE = re.compile(r"[\w.-]+/[\w.-]+(?::[\w.-]+){0,2}")
# Rows read from a parquet file per batch: bounds memory on files of long documents.
_PARQUET_BATCH = 256


@dataclass(frozen=True)
class Row:
    """One record of a source.

    Attributes:
        location: ``file:row`` (or ``name[config/split]:row`` for a dataset), for messages.
        values: The record's fields.
    """

    location: str
    values: Mapping[str, Any]

    def get(self, field: str, kind: type | tuple[type, ...] = str) -> Any:
        """The value of ``field``, checked to be of ``kind``.

        Raises:
            DataError: If the row has no such field (the message lists the fields it has) or the
                value has another type.
        """
        if field not in self.values:
            have = ", ".join(repr(name) for name in self.values) or "none"
            raise DataError(f"{self.location}: no field {field!r} (fields: {have}); map it with "
                            "the field names of your data")
        value = self.values[field]
        if not isinstance(value, kind):
            raise DataError(f"{self.location}: field {field!r} is {type(value).__name__}, "
                            f"expected {_kind_name(kind)}")
        return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({str: "text", list: "a list", dict: "an object"}.get(k, k.__name__)
                       for k in kinds)


@dataclass(frozen=True)
class Source:
    """One resolved source: a file, a saved ``datasets`` directory, or a cached dataset.

    Attributes:
        kind: ``"text"``, ``"jsonl"``, ``"json"``, ``"parquet"``, ``"saved"`` or ``"cached"``.
        path: The file or directory; for ``"cached"`` the dataset name.
        config: Dataset config (``"cached"`` only).
        split: Split to read from a saved or cached dataset with several; None: the only one.
    """

    kind: str
    path: str
    config: str | None = None
    split: str | None = None

    def stamp(self) -> list[Any]:
        """What the cache key records of this source: size and mtime of every file it reads."""
        if self.kind == "cached":
            return [self.path, self.config, self.split, _load_cached(self)._fingerprint]
        if self.kind == "saved":
            files = sorted(p for p in Path(self.path).rglob("*") if p.is_file())
            return [self.split, file_stamps(files)]
        return file_stamps([self.path])

    def rows(self) -> Iterator[Row]:
        """The rows of the source, in order."""
        if self.kind == "text":
            yield Row(f"{self.path}:1", {"text": read_utf8(Path(self.path))})
        elif self.kind == "jsonl":
            yield from _jsonl_rows(Path(self.path))
        elif self.kind == "json":
            yield from _json_rows(Path(self.path))
        elif self.kind == "parquet":
            yield from _parquet_rows(Path(self.path))
        else:
            dataset = _load_saved(self) if self.kind == "saved" else _load_cached(self)
            where = self.path if self.kind == "saved" else f"{self.path}[{self.config or ''}]"
            if self.split:
                where = f"{where}/{self.split}"
            for index, values in enumerate(dataset, start=1):
                yield Row(f"{where}:{index}", values)


def _jsonl_rows(path: Path) -> Iterator[Row]:
    for lineno, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg} at column "
                            f"{err.colno})") from None
        if not isinstance(values, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got "
                            f"{type(values).__name__}")
        yield Row(f"{path}:{lineno}", values)


def _json_rows(path: Path) -> Iterator[Row]:
    text = read_utf8(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if text.lstrip().startswith("{") and err.msg == "Extra data":
            # JSON lines saved under a .json name (as `to_json(lines=True)` writes).
            yield from _jsonl_rows(path)
            return
        raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg} at column "
                        f"{err.colno})") from None
    if isinstance(data, dict) and data and all(isinstance(v, (list, dict)) for v in data.values()):
        # An object of columns: {"input": [...], ...}, or pandas' {"input": {"0": ...}, ...}.
        columns = {key: list(v.values()) if isinstance(v, dict) else v for key, v in data.items()}
        sizes = {len(v) for v in columns.values()}
        if len(sizes) != 1:
            raise DataError(f"{path}: columns of different lengths {sorted(sizes)}")
        data = [dict(zip(columns, values)) for values in zip(*columns.values())]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of objects or an object of columns")
    for index, values in enumerate(data, start=1):
        if not isinstance(values, dict):
            raise DataError(f"{path}:{index}: expected a JSON object, got {type(values).__name__}")
        yield Row(f"{path}:{index}", values)


def _parquet_rows(path: Path) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=_PARQUET_BATCH)
        index = 0
        for batch in batches:
            for values in batch.to_pylist():
                index += 1
                yield Row(f"{path}:{index}", values)
    except (pa.ArrowException, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: cannot read as parquet ({reason})") from None


def _load_saved(source: Source) -> Any:
    import datasets

    loaded = datasets.load_from_disk(source.path)
    return _pick_split(loaded, source, source.path)


def _pick_split(loaded: Any, source: Source, where: str) -> Any:
    import datasets

    if not isinstance(loaded, datasets.DatasetDict):
        return loaded
    if source.split is None and len(loaded) == 1:
        return next(iter(loaded.values()))
    if source.split not in loaded:
        raise DataError(f"{where}: choose a split: {', '.join(loaded)} (got {source.split!r})")
    return loaded[source.split]


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Run ``datasets`` in offline mode: it reads the flag at call time, the variable at import."""
    import datasets

    # datasets >= 3 reads HF_HUB_OFFLINE; older releases read HF_DATASETS_OFFLINE.
    names = [n for n in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if hasattr(datasets.config, n)]
    before = {name: getattr(datasets.config, name) for name in names}
    for name in names:
        setattr(datasets.config, name, True)
    try:
        yield
    finally:
        for name, value in before.items():
            setattr(datasets.config, name, value)


def _load_cached(source: Source) -> Any:
    import datasets

    where = f"{source.path}" + (f":{source.config}" if source.config else "")
    try:
        with _offline():
            loaded = datasets.load_dataset(source.path, source.config, split=source.split)
    except (ConnectionError, FileNotFoundError, ValueError, RuntimeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{where}: not in the local Hugging Face cache and not a file or "
                        f"directory (offline: nothing is downloaded): {reason}") from None
    return _pick_split(loaded, source, where)


def hub_snapshot(name: str, cache_dir: str | Path | None = None) -> Path | None:
    """The local Hub cache snapshot of dataset repository ``name``, without network; None if absent.

    ``datasets`` (>= 3) keeps the files it downloads from the Hub there
    (``~/.cache/huggingface/hub/datasets--org--name/snapshots/<commit>/``).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(name, repo_type="dataset", local_files_only=True,
                                 cache_dir=None if cache_dir is None else str(cache_dir))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        return None
    return Path(path)


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a directory written by ``Dataset.save_to_disk`` / ``DatasetDict``'s."""
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file())


def _files_in(directory: Path, suffixes: Sequence[str]) -> list[Path]:
    return sorted(p for p in directory.rglob("*")
                  if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))


def _file_source(path: Path) -> Source:
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return Source("text", str(path))
    if suffix in (".jsonl", ".ndjson"):
        return Source("jsonl", str(path))
    if suffix in (".json", ".parquet"):
        return Source(suffix[1:], str(path))
    raise DataError(f"{path}: unsupported file type {suffix or '(none)'}; use "
                    f"{', '.join(TEXT_SUFFIXES + TABLE_SUFFIXES)}")


def resolve_sources(
    sources: str | Path | Sequence[str | Path | Source],
    suffixes: Sequence[str] = TEXT_SUFFIXES + TABLE_SUFFIXES,
    hub_cache: str | Path | None = None,
) -> list[Source]:
    """Expand files, directories, globs and dataset names into a list of sources.

    Args:
        sources: One source or a list of them (see the module docstring); resolved
            :class:`Source` objects pass through.
        suffixes: File types taken from directories and globs.
        hub_cache: The Hugging Face Hub cache; default: ``$HF_HUB_CACHE`` or its default.

    Raises:
        DataError: For no sources, a missing path, a glob or directory with no usable files, or
            a name that is neither a path nor in the local cache.
    """
    if isinstance(sources, (str, Path, Source)):
        sources = [sources]
    if not sources:
        raise DataError("no data sources given")
    resolved: list[Source] = []
    for item in sources:
        if isinstance(item, Source):
            resolved.append(item)
            continue
        text = str(item)
        path = Path(text).expanduser()
        if any(ch in text for ch in "*?["):
            matches = [Path(p) for p in sorted(glob.glob(str(path), recursive=True))]
            files = [p for p in matches if p.is_file() and p.suffix.lower() in suffixes]
            if not files:
                raise DataError(f"{text}: the pattern matches no {'/'.join(suffixes)} files")
            resolved.extend(_file_source(p) for p in files)
        elif path.is_dir():
            if is_saved_dataset(path):
                resolved.append(Source("saved", str(path)))
                continue
            files = _files_in(path, suffixes)
            if not files:
                raise DataError(f"{path}: directory has no {'/'.join(suffixes)} files")
            resolved.extend(_file_source(p) for p in files)
        elif path.is_file():
            resolved.append(_file_source(path))
        elif _NAME_RE.fullmatch(text) and path.suffix.lower() not in suffixes:
            resolved.extend(_named_sources(text, suffixes, hub_cache))
        else:
            raise DataError(f"{text}: no such file or directory")
    return resolved


def _named_sources(text: str, suffixes: Sequence[str], hub_cache: str | Path | None) -> list[Source]:
    name, _, rest = text.partition(":")
    config, _, split = rest.partition(":")
    snapshot = hub_snapshot(name, hub_cache)
    if snapshot is not None:
        found = directory_sources(snapshot, config or None, split or None, suffixes)
        if found:
            logger.info("%s: reading the local Hub cache %s", text, snapshot)
            return found
    return [Source("cached", name, config or None, split or None)]


def directory_sources(
    root: Path, config: str | None, split: str | None,
    suffixes: Sequence[str] = TABLE_SUFFIXES,
) -> list[Source]:
    """The sources of one config and split of a dataset directory (a Hub snapshot, an export).

    ``root/<config>`` is used when it exists. A ``save_to_disk`` directory gives its ``split``;
    otherwise data files are taken whose folder or name marks the split the Hub way
    (``train/...``, ``train-00000-of-00001.parquet``, ``test.jsonl``). Empty if there are none.
    """
    if config and (root / config).is_dir():
        root = root / config
    if is_saved_dataset(root):
        return [Source("saved", str(root), split=split)]
    files = [p for p in _files_in(root, suffixes) if not split or _in_split(p, root, split)]
    return [_file_source(p) for p in files]


def _in_split(path: Path, root: Path, split: str) -> bool:
    """Whether a data file belongs to ``split`` by the Hub naming (``train-0000.parquet``, ...)."""
    parts = path.relative_to(root).parts
    return split in parts[:-1] or re.match(rf"{re.escape(split)}(?:[-_.]|$)", path.name) is not None


def read_rows(sources: Sequence[Source]) -> Iterator[Row]:
    """All rows of ``sources``, in order."""
    for source in sources:
        yield from source.rows()
