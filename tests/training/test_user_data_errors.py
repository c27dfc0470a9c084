"""Bad user data stops a training run in one line naming the file and row, exit status 2, before
anything is written (through the train worker, in-process: the data is read by the run plan, before
any process group or output directory exists)."""

from __future__ import annotations

import json

import datasets
import pytest

from rmt_scale.cli import train_worker
from tests.training.helpers import keep_logging
from tests.training.user_data_files import FILLER, overrides, qa_rows, save_tokenizer, write_rows


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """This test's own datasets cache; the package's logging left as it was (main() sets it up)."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    yield from keep_logging()


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return save_tokenizer(tmp_path_factory.mktemp("tokenizer") / "bpe")


def fails(tmp_path, capsys, kind, tokenizer_dir, source, *extra) -> str:
    argv = ["--config", "tiny", *overrides(kind, tokenizer_dir, [source], tmp_path / "run",
                                           "data.valid_fraction=0", *extra)]
    assert train_worker.main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    assert not (tmp_path / "run").exists()
    return errors[0]


def test_missing_and_misnamed_fields_name_the_file_and_row(tmp_path, capsys, tokenizer_dir):
    rows = qa_rows(3)
    rows[1] = {"contxt": rows[1]["context"], "question": rows[1]["question"], "answer": rows[1]["answer"]}
    source = write_rows(rows, tmp_path / "qa.jsonl")
    line = fails(tmp_path, capsys, "qa", tokenizer_dir, source)
    assert line == (f"error: {source}:2: no field 'context' (fields: 'contxt', 'question', 'answer'); "
                    "map it with the field names of your data")
    line = fails(tmp_path, capsys, "qa", tokenizer_dir, write_rows(qa_rows(3), tmp_path / "qa.parquet"),
                 "data.qa.fields={context: document}")
    assert line.startswith(f"error: {tmp_path / 'qa.parquet'}:1: no field 'document' (fields: ")


def test_an_empty_document_names_its_row(tmp_path, capsys, tokenizer_dir):
    source = write_rows([{"body": FILLER * 40}, {"body": "  \n"}], tmp_path / "books.jsonl")
    assert fails(tmp_path, capsys, "text", tokenizer_dir, source) == f"error: {source}:2: empty document"


def test_text_that_is_not_utf8_names_the_line(tmp_path, capsys, tokenizer_dir):
    book = tmp_path / "book.txt"
    book.write_bytes((FILLER + "\n").encode() * 2 + b"caf\xe9\n")
    line = fails(tmp_path, capsys, "text", tokenizer_dir, book)
    assert line.startswith(f"error: {book}:3: bytes that are not UTF-8 at offset ")


def test_no_data_left_after_filtering(tmp_path, capsys, tokenizer_dir):
    long_rows = [dict(row, context=f"{row['context']} {FILLER * 20}") for row in qa_rows(4)]
    source = write_rows(long_rows, tmp_path / "long.jsonl")
    line = fails(tmp_path, capsys, "qa", tokenizer_dir, source)
    assert line.startswith("error: all 4 samples are longer than the last stage's 128 tokens "
                           "(4 segments of 32), so none fits a stage under the policy 'skip'")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert fails(tmp_path, capsys, "qa", tokenizer_dir, empty) == f"error: {empty}: no QA rows"


def test_samples_that_fit_no_stage(tmp_path, capsys, tokenizer_dir):
    rows = [dict(row, context=f"{row['context']} {FILLER * 2}") for row in qa_rows(4)]
    source = write_rows(rows, tmp_path / "qa.jsonl")
    line = fails(tmp_path, capsys, "qa", tokenizer_dir, source, "curriculum.stages.0.num_segments=1")
    assert line.startswith("error: curriculum stage 0 (1 segments of 32 tokens) has no samples with "
                           "1..1 segments: samples fill ")
    line = fails(tmp_path, capsys, "qa", tokenizer_dir, source, "data.qa.long_samples=error",
                 "curriculum.stages.1.num_segments=2")
    assert line.startswith(f"error: {source}:1: ") and "tokens, longer than the last stage's 64 tokens" in line


def test_templates_without_the_question_or_a_chat_template(tmp_path, capsys, tokenizer_dir):
    source = write_rows(qa_rows(3), tmp_path / "qa.jsonl")
    line = fails(tmp_path, capsys, "qa", tokenizer_dir, source, "data.qa.template='Document: {context}'")
    assert line == "error: data.qa.template: template 'Document: {context}' does not contain {question}"
    line = fails(tmp_path, capsys, "qa", tokenizer_dir, source, "data.qa.template=chat")
    assert line.startswith("error: template 'chat' needs a tokenizer with a chat template, and this one "
                           "has none")


def test_a_chat_row_that_does_not_end_with_the_answer(tmp_path, capsys, tokenizer_dir):
    chat = tmp_path / "chat_tokenizer"
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    chat.mkdir()
    (chat / "tokenizer.json").write_bytes((tokenizer_dir / "tokenizer.json").read_bytes())
    (chat / "tokenizer_config.json").write_text(json.dumps(config))
    rows = [{"messages": [{"role": "user", "content": "Where is Mary?"},
                          {"role": "assistant", "content": "kitchen"}]},
            {"messages": [{"role": "user", "content": "Where is John?"},
                          {"role": "user", "content": "garden"}]}]
    source = write_rows(rows, tmp_path / "chat.jsonl")
    line = fails(tmp_path, capsys, "qa", chat, source, "data.qa.template=chat")
    assert line == (f"error: {source}:2: the last turn of 'messages' must be the assistant's answer, "
                    "not 'user'")
