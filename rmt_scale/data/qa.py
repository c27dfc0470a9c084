"""Long-context QA and SFT data: rows with a field mapping, a prompt template, answer-only labels.

A row is either ``context`` + ``question`` + ``answer`` (field names mapped by ``fields``; an
optional ``task`` field picks BABILong's per-task prompt) or a chat ``messages`` list whose last
turn is the assistant's answer. :func:`qa_dataset` renders rows with a template
(:mod:`rmt_scale.data.templates`), tokenises them once and caches the result like
:func:`rmt_scale.data.babilong_dataset`. Columns:

* ``input_ids``: prompt + answer (+ EOS for text templates), the prompt with the tokenizer's
  special tokens (BOS);
* ``labels``: IGNORE_INDEX on the prompt, the answer's token ids after it: the loss is on the
  answer only, wherever segment boundaries fall (the model shifts labels itself, so the last prompt
  token predicts the first answer token, also when that token opens a new segment);
* ``prompt_length``: tokens of the prompt; generation starts from ``input_ids[:prompt_length]``;
* ``num_tokens``: ``len(input_ids)``, for bucketing without reading the ids;
* ``context_start``, ``context_end``: token span of the context in the prompt (-1 when unknown),
  where :func:`rmt_scale.data.fit_to_length` truncates long samples from the left;
* ``task``, ``question``, ``answer``: for scoring; ``source``: ``file:row`` of the row;
* ``group``: a hash of the context (of a chat's turns before the answer): rows on the same text
  share it, so :func:`rmt_scale.data.holdout_split` on it never splits a text across train and
  validation.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

from rmt_scale.data.caching import cache_key, tokenizer_hash
from rmt_scale.data.records import records_dataset
from rmt_scale.data.sources import Row, Source, read_rows, resolve_sources
from rmt_scale.data.templates import PromptTemplate, Rendered, get_template
from rmt_scale.errors import DataError
from rmt_scale.model.segments import IGNORE_INDEX

logger = logging.getLogger(__name__)

DEFAULT_FIELDS = {"context": "context", "question": "question", "answer": "answer",
                  "messages": "messages", "task": "task"}
"""Field names read by default; ``fields`` overrides some of them, e.g. ``{"context": "input"}``."""

_TEXT_FEATURES = datasets.Features({
    "context": datasets.Value("string"),
    "question": datasets.Value("string"),
    "answer": datasets.Value("string"),
    "task": datasets.Value("string"),
    "messages": datasets.Value("string"),  # JSON of the chat, "" for context/question rows
    "source": datasets.Value("string"),
    "group": datasets.Value("string"),
})


def field_mapping(fields: Mapping[str, str] | None) -> dict[str, str]:
    """The default field names updated with ``fields``.

    Raises:
        DataError: For a key that is not a field this reader knows.
    """
    unknown = sorted(set(fields or {}) - set(DEFAULT_FIELDS))
    if unknown:
        raise DataError(f"unknown QA field(s) {unknown}: valid are {', '.join(DEFAULT_FIELDS)}")
    return {**DEFAULT_FIELDS, **(fields or {})}


def _messages(row: Row, field: str) -> list[dict[str, str]]:
    messages = row.get(field, list)
    if len(messages) < 2:
        raise DataError(f"{row.location}: field {field!r} needs at least a user turn and the "
                        "assistant's answer")
    for turn in messages:
        if not (isinstance(turn, dict) and isinstance(turn.get("role"), str)
                and isinstance(turn.get("content"), str)):
            raise DataError(f"{row.location}: each turn of {field!r} needs text 'role' and "
                            "'content'")
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{row.location}: the last turn of {field!r} must be the assistant's "
                        f"answer, not {messages[-1]['role']!r}")
    return [{"role": t["role"], "content": t["content"]} for t in messages]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def qa_records(
    rows: Iterator[Row], fields: Mapping[str, str] | None = None, task: str | None = None,
    uses_context: bool = True,
) -> Iterator[dict[str, str]]:
    """Check rows and turn them into flat text records (the cached first step).

    A row is a chat when it has the ``messages`` field and not the ``question`` one.

    Raises:
        DataError: For a missing or mistyped field, or an empty answer, naming ``file:row``.
    """
    names = field_mapping(fields)
    for row in rows:
        row_task = row.values.get(names["task"]) or task or ""
        if names["question"] not in row.values and names["messages"] in row.values:
            chat = _messages(row, names["messages"])
            question = next((t["content"] for t in reversed(chat) if t["role"] == "user"), "")
            yield {"context": "", "question": question, "answer": chat[-1]["content"],
                   "task": str(row_task), "messages": json.dumps(chat), "source": row.location,
                   "group": _digest(json.dumps(chat[:-1]))}
            continue
        context = row.get(names["context"]) if uses_context else ""
        question = row.get(names["question"])
        answer = row.get(names["answer"])
        if not answer.strip():
            raise DataError(f"{row.location}: field {names['answer']!r} is empty")
        if not question.strip():
            raise DataError(f"{row.location}: field {names['question']!r} is empty")
        yield {"context": context, "question": question, "answer": answer,
               "task": str(row_task), "messages": "", "source": row.location,
               "group": _digest(context.strip())}


def _generate(sources: tuple[Source, ...], fields: dict[str, str], task: str | None,
              uses_context: bool) -> Iterator[dict[str, str]]:
    """Generator for ``Dataset.from_generator``."""
    yield from qa_records(read_rows(sources), fields, task, uses_context)


def _context_tokens(offsets: Sequence[tuple[int, int]], span: tuple[int, int] | None,
                    prompt_tokens: int) -> tuple[int, int]:
    """Token span of a character span, from a fast tokenizer's offsets; (-1, -1) if unknown."""
    if span is None or not offsets:
        return -1, -1
    start_char, end_char = span
    # Special tokens have offsets (0, 0), so they never count as context.
    start = next((i for i, (a, b) in enumerate(offsets) if b > start_char and b > a), prompt_tokens)
    end = next((i for i in range(start, prompt_tokens) if offsets[i][0] >= end_char), prompt_tokens)
    return start, end


def _tokenize(batch: dict[str, list], tokenizer: Any, template: PromptTemplate) -> dict[str, list]:
    from jinja2 import TemplateError

    rendered: list[Rendered] = []
    for context, question, answer, task, messages, source in zip(
            batch["context"], batch["question"], batch["answer"], batch["task"],
            batch["messages"], batch["source"], strict=True):
        try:
            if messages:
                rendered.append(template.render_messages(json.loads(messages)))
            else:
                rendered.append(template.render(context, question, answer, task or None))
        except TemplateError as err:  # e.g. a chat template that wants other roles
            raise DataError(f"{source}: the chat template rejects this row: {err}") from None
    fast = bool(getattr(tokenizer, "is_fast", False))
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    out: dict[str, list] = {key: [] for key in ("input_ids", "labels", "prompt_length",
                                                "num_tokens", "context_start", "context_end")}
    if not rendered:
        return out
    # One template per dataset, so one special-token setting for the whole batch.
    prompts = tokenizer([r.prompt for r in rendered],
                        add_special_tokens=rendered[0].add_special_tokens,
                        return_offsets_mapping=fast, verbose=False)
    answers = tokenizer([r.completion for r in rendered], add_special_tokens=False,
                        verbose=False)["input_ids"]
    offsets = prompts.get("offset_mapping") or [[] for _ in rendered]
    for item, prompt, answer, offset in zip(rendered, prompts["input_ids"], answers, offsets,
                                            strict=True):
        answer = answer + (eos if item.add_eos else [])
        start, end = _context_tokens(offset, item.context_span, len(prompt))
        out["input_ids"].append(prompt + answer)
        out["labels"].append([IGNORE_INDEX] * len(prompt) + answer)
        out["prompt_length"].append(len(prompt))
        out["num_tokens"].append(len(prompt) + len(answer))
        out["context_start"].append(start)
        out["context_end"].append(end)
    return out


def qa_dataset(
    sources: str | Path | Sequence[str | Path | Source],
    tokenizer: Any,
    *,
    fields: Mapping[str, str] | None = None,
    template: str = "plain",
    task: str | None = None,
    cache_dir: str | Path | None = None,
) -> datasets.Dataset:
    """Read, check, render and tokenise QA rows (cached: a second call with the same inputs reads
    the Arrow files of the first).

    Args:
        sources: Files, directories, globs or dataset names (:func:`resolve_sources`).
        tokenizer: The model's Hugging Face tokenizer.
        fields: Field names of your data, e.g. ``{"context": "document", "answer": "target"}``
            (keys: ``context``, ``question``, ``answer``, ``messages``, ``task``).
        template: ``"babilong"``, ``"plain"``, ``"chat"`` or a custom pattern (see
            :func:`rmt_scale.data.get_template`).
        task: BABILong task of rows without a ``task`` field (selects the ``babilong`` prompt).
        cache_dir: Where ``datasets`` keeps the Arrow files; default: the HF datasets cache.

    Returns:
        A dataset with the columns listed in the module docstring, one row per source row.

    Raises:
        DataError: For bad sources, fields, rows or templates (see the module docstrings), or no
            rows at all.
    """
    names = field_mapping(fields)
    prompt_template = get_template(template, tokenizer)
    resolved = resolve_sources(sources)
    key = cache_key("qa-text", sources=[s.stamp() for s in resolved], fields=names, task=task,
                    context=prompt_template.uses_context)
    text = records_dataset(
        _generate, _TEXT_FEATURES,
        # Tuples, not lists: `datasets` shards list-valued gen_kwargs into separate calls.
        {"sources": tuple(resolved), "fields": names, "task": task,
         "uses_context": prompt_template.uses_context},
        key, cache_dir, resolved, "QA rows")
    tok_key = cache_key("qa-tokens", text=key, tokenizer=tokenizer_hash(tokenizer),
                        template=template, chat=getattr(tokenizer, "chat_template", None))
    return text.map(
        _tokenize, batched=True, batch_size=64,
        fn_kwargs={"tokenizer": tokenizer, "template": prompt_template},
        remove_columns=["context", "messages"], new_fingerprint=tok_key,
        desc="Tokenizing QA rows",
    )

