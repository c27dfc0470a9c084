"""Files for the user-data training tests: a tokenizer saved to a directory, long documents and QA
rows written as jsonl, parquet and saved `datasets` directories, and the config overrides that make
the tiny recipe train on them."""

from __future__ import annotations

import json
import random
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from tests.bpe import byte_level_bpe
from tests.training.helpers import REPO

BOOKS = REPO / "examples" / "data" / "books"
SEGMENT = 32
NAMES = ("Mary", "John", "Sandra", "Daniel")
PLACES = ("kitchen", "garden", "hallway", "office", "bathroom")
FILLER = "The sun was warm and the day went on slowly as people walked by the river."


def book_texts() -> list[str]:
    """The example books (the short note left out: it is shorter than any window here)."""
    return [p.read_text() for p in sorted(BOOKS.glob("*.txt")) if p.stat().st_size > 10_000]


def save_tokenizer(path: Path) -> Path:
    """A 500-token byte-level BPE trained on the example books and the QA words, saved."""
    lines = [line for text in book_texts() for line in text.splitlines() if line.strip()]
    lines += [f"{name} went to the {place}. Where is {name}? {place}" for name in NAMES for place in PLACES]
    tokenizer = byte_level_bpe(lines, 500, pad_token="<pad>", eos_token="<eos>")
    tokenizer.save_pretrained(str(path))
    return path


def qa_rows(count: int = 48, seed: int = 0) -> list[dict[str, str]]:
    """Rows whose answer (one of 5 places) is stated at the start of a context of varying length."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        name, place = rng.choice(NAMES), rng.choice(PLACES)
        padding = " ".join([FILLER] * rng.randint(0, 3))
        rows.append({"context": f"{name} went to the {place}. {padding}".strip(),
                     "question": f"Where is {name}?", "answer": place})
    return rows


def write_rows(rows: list[dict], path: Path) -> Path:
    """`rows` as .jsonl, .parquet, or (no suffix) a `save_to_disk` directory, by `path`'s suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


def document_rows(field: str = "body") -> list[dict[str, str]]:
    return [{field: text} for text in book_texts()]


def overrides(kind: str, tokenizer: Path, sources: list[Path], out: Path, *extra: str) -> list[str]:
    """The tiny recipe (random Llama, 4 memory tokens) on user data: 2 stages x 10 steps of a global
    batch of 8, segments of 32 tokens; stage 2 draws 1-2 (text) or up to 4 (qa) segments."""
    listed = "[" + ",".join(str(s) for s in sources) + "]"
    common = [f"output_dir={out}", f"data.kind={kind}", f"data.tokenizer={tokenizer}",
              "model.random.vocab_size=512", f"rmt.segment_size={SEGMENT}",
              "curriculum.stages.0.steps=10", "curriculum.stages.1.steps=10",
              "curriculum.stages.1.advance=null", "batch.micro_batch_size=2", "batch.global_batch_size=8",
              "eval.every_steps=0", "checkpoint.every_steps=0", "data.valid_samples=8",
              "data.valid_fraction=0.2", "logging.every_steps=1", "logging.progress_bar=false",
              "optimizer.lr=0.01", "schedule.warmup_steps=0"]
    if kind == "text":
        common += [f"data.text.sources={listed}", "data.text.field=body"]
    else:
        common += [f"data.qa.sources={listed}", "curriculum.stages.0.num_segments=2",
                   "curriculum.stages.1.num_segments=4"]
    return common + list(extra)
