"""Long documents for language modelling: read, tokenise once (cached), cut into stage windows.

A stage with ``n`` segments trains on windows of ``n * segment_size`` tokens with
``labels == input_ids`` (loss on every token; the model shifts labels itself).

Windows respect document boundaries: a document of ``L >= window`` tokens gives
``L // window`` windows tiled from its start, and its last ``L % window`` tokens are left out
(counted in ``dropped_tokens``). A window therefore never joins two documents, so the memory
carried through its segments is the memory of one text.

Documents shorter than the window follow one policy, reported in :class:`WindowPlan` counts:

* ``"skip"`` (default): they give no window at this stage (they may at a shorter one). Why the
  default: memory is trained to carry one document forward, and a packed window would teach it to
  carry text across an unrelated boundary;
* ``"pack"``: they are joined in order, a separator token (EOS by default) between two documents,
  and the stream is cut into windows; its last partial window is left out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch

from rmt_scale.data.caching import cache_key, tokenizer_hash
from rmt_scale.data.noise import normalize_text, strip_gutenberg
from rmt_scale.data.records import records_dataset
from rmt_scale.data.sources import Source, resolve_sources
from rmt_scale.errors import DataError

logger = logging.getLogger(__name__)

SHORT_DOCUMENT_POLICIES = ("skip", "pack")

_TEXT_FEATURES = datasets.Features({"text": datasets.Value("string"),
                                    "source": datasets.Value("string")})


def _generate(sources: tuple[Source, ...], field: str, strip_license: bool) -> Iterator[dict]:
    """Generator for ``Dataset.from_generator``: one checked record per document."""
    for source in sources:
        # A .txt file is one document whatever the field name of the tables.
        name = "text" if source.kind == "text" else field
        for row in source.rows():
            text = row.get(name)
            text = strip_gutenberg(text) if strip_license else normalize_text(text)
            if not text.strip():
                raise DataError(f"{row.location}: empty document")
            yield {"text": text, "source": row.location}


def _tokenize(batch: dict[str, list], tokenizer: Any) -> dict[str, list]:
    ids = tokenizer(batch["text"], add_special_tokens=False, verbose=False)["input_ids"]
    return {"input_ids": ids, "num_tokens": [len(row) for row in ids]}


def document_dataset(
    sources: str | Path | Sequence[str | Path | Source],
    tokenizer: Any,
    *,
    field: str = "text",
    cache_dir: str | Path | None = None,
    strip_license: bool = True,
) -> datasets.Dataset:
    """Read and tokenise documents, once: a second call with the same inputs reads the cache.

    The cache key covers the size and modification time of every source file, the tokenizer and
    ``field``, so editing a file or changing the tokenizer re-tokenises.

    Args:
        sources: Files, directories, globs or dataset names (:func:`resolve_sources`).
        tokenizer: The model's Hugging Face tokenizer.
        field: The text field of ``.jsonl``/``.json``/``.parquet`` rows and datasets.
        cache_dir: Where ``datasets`` keeps the Arrow files; default: the HF datasets cache.
        strip_license: Remove a Project Gutenberg header and license when present.

    Returns:
        A dataset with ``input_ids`` (a whole document, no special tokens), ``num_tokens`` and
        ``source`` (``file:row``), one row per document.

    Raises:
        DataError: For bad sources, a missing or non-text field, an empty document, non-UTF-8
            text, unparsable files, or no documents.
    """
    resolved = resolve_sources(sources)
    key = cache_key("documents", sources=[s.stamp() for s in resolved], field=field,
                    strip_license=strip_license)
    text = records_dataset(
        _generate, _TEXT_FEATURES,
        # A tuple, not a list: `datasets` shards list-valued gen_kwargs into separate calls.
        {"sources": tuple(resolved), "field": field, "strip_license": strip_license},
        key, cache_dir, resolved, "documents")
    return text.map(
        _tokenize, batched=True, batch_size=8, fn_kwargs={"tokenizer": tokenizer},
        remove_columns=["text"],
        new_fingerprint=cache_key("documents-tokens", text=key, tokenizer=tokenizer_hash(tokenizer)),
        desc="Tokenizing documents",
    )


# A piece of a window: tokens [start, end) of document `doc`, or the separator when doc == -1.
Piece = tuple[int, int, int]


@dataclass
class WindowPlan:
    """The windows of one stage length, as pieces of documents (no token ids held).

    Attributes:
        window: Tokens per window (``num_segments * segment_size``).
        policy: The short-document policy.
        windows: Each window's pieces, in order.
        long_documents: Documents of at least ``window`` tokens.
        short_documents: Documents shorter than ``window`` (skipped or packed).
        dropped_tokens: Document tokens in no window (tails, the packed stream's rest, skipped
            documents).
    """

    window: int
    policy: str
    windows: list[tuple[Piece, ...]] = field(default_factory=list)
    long_documents: int = 0
    short_documents: int = 0
    dropped_tokens: int = 0

    def __str__(self) -> str:
        verb = "packed" if self.policy == "pack" else "skipped"
        return (f"{len(self.windows)} windows of {self.window} tokens; documents: "
                f"{self.long_documents} long enough, {self.short_documents} shorter {verb}; "
                f"tokens left out: {self.dropped_tokens}")


def plan_windows(
    lengths: Sequence[int], window: int, short_documents: str = "skip"
) -> WindowPlan:
    """Cut documents of the given token counts into windows of ``window`` tokens.

    See the module docstring for the boundary and short-document rules.

    Raises:
        DataError: For an unknown policy or a window below one token.
    """
    if short_documents not in SHORT_DOCUMENT_POLICIES:
        raise DataError(f"unknown short-document policy {short_documents!r}: use "
                        f"{', '.join(SHORT_DOCUMENT_POLICIES)}")
    if window < 1:
        raise DataError(f"window must be >= 1 token, got {window}")
    plan = WindowPlan(window, short_documents)
    stream: list[Piece] = []  # the packed short documents, separators between them
    stream_tokens = 0
    for doc, length in enumerate(lengths):
        if length >= window:
            plan.long_documents += 1
            plan.windows.extend(((doc, start, start + window),)
                                for start in range(0, length - window + 1, window))
            plan.dropped_tokens += length % window
            continue
        plan.short_documents += 1
        if short_documents == "skip":
            plan.dropped_tokens += length
            continue
        if stream:
            stream.append((-1, 0, 1))
            stream_tokens += 1
        stream.append((doc, 0, length))
        stream_tokens += length
    plan.windows.extend(_cut_stream(stream, window, plan))
    return plan


def _cut_stream(stream: list[Piece], window: int, plan: WindowPlan) -> Iterator[tuple[Piece, ...]]:
    current: list[Piece] = []
    room = window
    for doc, start, end in stream:
        while start < end:
            take = min(room, end - start)
            current.append((doc, start, start + take))
            start += take
            room -= take
            if room == 0:
                yield tuple(current)
                current, room = [], window
    plan.dropped_tokens += sum(end - start for doc, start, end in current if doc >= 0)


def window_counts(
    lengths: Sequence[int], segment_size: int, stages: Sequence[int], short_documents: str = "skip"
) -> dict[int, WindowPlan]:
    """The window plan of each stage length, for the start-up plan.

    Raises:
        DataError: If a stage has no window (no document is long enough and nothing is packed).
    """
    plans: dict[int, WindowPlan] = {}
    for n in dict.fromkeys(stages):
        plan = plan_windows(lengths, n * segment_size, short_documents)
        if not plan.windows:
            have = (f"even packed, the {len(lengths)} documents have {sum(lengths)} tokens"
                    if short_documents == "pack" else
                    f"the longest of {len(lengths)} documents has {max(lengths, default=0)} "
                    "tokens (short_documents='pack' would join short ones)")
            raise DataError(f"no window of {n} segments x {segment_size} tokens: {have}; use "
                            "fewer segments or more text")
        plans[n] = plan
    return plans


class TextWindows(torch.utils.data.Dataset):
    """The windows of a :class:`WindowPlan` as samples ``{"input_ids", "labels"}`` (equal lists).

    Token ids are read from the Arrow table of the documents per window, so a window costs its own
    tokens, never a whole book.

    Args:
        documents: A :func:`document_dataset` (or a ``select`` of it).
        plan: Windows planned on ``documents["num_tokens"]``, in the same row order.
        separator_id: Token between packed documents (needed only when the plan packs).
    """

    def __init__(self, documents: datasets.Dataset, plan: WindowPlan,
                 separator_id: int | None = None):
        if plan.policy == "pack" and plan.short_documents and separator_id is None:
            raise DataError("short_documents='pack' needs a separator token: the tokenizer has no "
                            "EOS token, pass separator_id")
        self.documents = documents.with_format("arrow")
        self.plan = plan
        self.separator_id = separator_id

    def __len__(self) -> int:
        return len(self.plan.windows)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        ids: list[int] = []
        for doc, start, end in self.plan.windows[index]:
            if doc < 0:
                ids.append(self.separator_id)
                continue
            row = self.documents[doc]["input_ids"][0]
            ids.extend(row.values[start:end].to_pylist())
        return {"input_ids": ids, "labels": list(ids)}
