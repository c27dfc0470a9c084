"""Long-context QA rows: field mapping, templates, answer-only labels, bucketing, long samples."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from rmt_scale.data import (
    LeftPadCollator,
    bucket_counts,
    fit_to_length,
    get_template,
    holdout_split,
    qa_dataset,
    sample_segments,
    stage_samples,
)
from rmt_scale.errors import DataError
from rmt_scale.model.segments import IGNORE_INDEX, SegmentPlan

CONTEXT = "Mary moved to the bathroom. It was a bright cold day in April. " * 4
ROWS = [
    {"context": CONTEXT, "question": "Where is Mary?", "answer": "bathroom"},
    {"context": CONTEXT * 3, "question": "Where is John?", "answer": "hallway"},
    {"context": "John went to the hallway.", "question": "Where is John?", "answer": "hallway"},
]
CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def qa(tokenizer, tmp_path: Path):
    return qa_dataset(write_jsonl(tmp_path / "qa.jsonl", ROWS), tokenizer,
                      cache_dir=tmp_path / "cache")


@pytest.fixture(scope="module")
def chat_tokenizer(tokenizer):
    chat = copy.deepcopy(tokenizer)
    chat.chat_template = CHAT
    return chat


def scored(row) -> list[int]:
    return [label for label in row["labels"] if label != IGNORE_INDEX]


def test_labels_are_the_answer_tokens_only(tokenizer, qa) -> None:
    for row, source in zip(qa, ROWS, strict=True):
        answer = tokenizer(" " + source["answer"], add_special_tokens=False)["input_ids"]
        assert scored(row) == answer + [tokenizer.eos_token_id]
        assert row["labels"][row["prompt_length"]:] == row["input_ids"][row["prompt_length"]:]
        prompt = tokenizer.decode(row["input_ids"][:row["prompt_length"]])
        assert prompt == f"{source['context']}\nQuestion: {source['question']}\nAnswer:"
        context = tokenizer.decode(row["input_ids"][row["context_start"]:row["context_end"]])
        assert context.strip() == source["context"].strip()
        assert row["num_tokens"] == len(row["input_ids"])


def test_answer_starting_a_new_segment_is_scored(qa) -> None:
    """The last prompt token predicts the first answer token across the segment boundary."""
    row = qa[0]
    segment_size = row["prompt_length"]  # the answer opens segment 2 exactly
    ids = torch.tensor([row["input_ids"]])
    plan = SegmentPlan(ids, None, torch.tensor([row["labels"]]), segment_size)
    first, second = plan.step(0), plan.step(1)
    assert first.targets[0, -1].item() == row["input_ids"][segment_size]
    assert (first.targets[0, :-1] == IGNORE_INDEX).all()
    targets = torch.cat([first.targets[0], second.targets[0]])
    assert [t for t in targets.tolist() if t != IGNORE_INDEX] == scored(row)
    # The same in a left-padded batch of different lengths, each padded to whole segments.
    batch = LeftPadCollator(0, pad_to_multiple_of=segment_size)([qa[1], row])
    plan = SegmentPlan(batch["input_ids"], batch["attention_mask"], batch["labels"], segment_size)
    targets = [[] for _ in range(2)]
    for step in plan:
        rows = step.rows.tolist() if step.rows is not None else [0, 1]
        for k, i in enumerate(rows):
            targets[i] += [t for t in step.targets[k].tolist() if t != IGNORE_INDEX]
    assert targets == [scored(qa[1]), scored(row)]


def test_field_mapping_and_formats(tokenizer, tmp_path: Path) -> None:
    mapped = [{"doc": r["context"], "q": r["question"], "a": r["answer"]} for r in ROWS]
    pq.write_table(pa.Table.from_pylist(mapped), tmp_path / "qa.parquet")
    datasets.Dataset.from_list(mapped).save_to_disk(tmp_path / "saved")
    fields = {"context": "doc", "question": "q", "answer": "a"}
    first = None
    for source in ("qa.parquet", "saved"):
        ds = qa_dataset(tmp_path / source, tokenizer, fields=fields, cache_dir=tmp_path / "c")
        assert list(ds["answer"]) == [r["answer"] for r in ROWS]
        first = first or ds["input_ids"]
        assert ds["input_ids"] == first
    with pytest.raises(DataError, match="unknown QA field"):
        qa_dataset(tmp_path / "qa.parquet", tokenizer, fields={"contxt": "doc"})


def test_custom_template(tokenizer, tmp_path: Path) -> None:
    ds = qa_dataset(write_jsonl(tmp_path / "qa.jsonl", ROWS[2:]), tokenizer,
                    template="Doc: {context}\nQ: {question}\nA:", cache_dir=tmp_path / "c")
    prompt = tokenizer.decode(ds[0]["input_ids"][:ds[0]["prompt_length"]])
    assert prompt == "Doc: John went to the hallway.\nQ: Where is John?\nA:"
    no_context = get_template("Q: {question}\nA:")
    assert not no_context.uses_context
    assert no_context.render(None, "Where?", "here").prompt == "Q: Where?\nA:"


def test_chat_template_rows_and_messages(chat_tokenizer, tmp_path: Path) -> None:
    messages = [{"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": CONTEXT + " Where is Mary?"},
                {"role": "assistant", "content": "bathroom"}]
    write_jsonl(tmp_path / "chat.jsonl", [{"messages": messages}])
    ds = qa_dataset(tmp_path / "chat.jsonl", chat_tokenizer, template="chat",
                    cache_dir=tmp_path / "c")
    row = ds[0]
    prompt = chat_tokenizer.decode(row["input_ids"][:row["prompt_length"]])
    assert prompt.endswith("<|assistant|>") and prompt.startswith("<|system|>Answer briefly.")
    assert chat_tokenizer.decode(scored(row)) == "bathroom<eos>"
    assert (row["answer"], row["question"]) == ("bathroom", CONTEXT + " Where is Mary?")
    ds = qa_dataset(write_jsonl(tmp_path / "qa.jsonl", ROWS[2:]), chat_tokenizer,
                    template="chat", cache_dir=tmp_path / "c")
    prompt = chat_tokenizer.decode(ds[0]["input_ids"][:ds[0]["prompt_length"]])
    assert prompt == ("<|user|><context>\nJohn went to the hallway.\n</context>\n\n"
                      "Question: Where is John?<eos><|assistant|>")
    assert chat_tokenizer.decode(scored(ds[0])) == "hallway<eos>"


def test_validation_split_keeps_rows_on_one_context_together(tokenizer, tmp_path: Path) -> None:
    rows = [dict(ROWS[0], question=f"Question {i}?") for i in range(3)] + ROWS[1:]
    ds = qa_dataset(write_jsonl(tmp_path / "qa.jsonl", rows), tokenizer, cache_dir=tmp_path / "c")
    groups = list(ds["group"])
    assert len(set(groups[:3])) == 1 and len(set(groups)) == 3
    for seed in range(4):
        train, valid = holdout_split(groups, 0.34, seed=seed)
        assert len(valid) in (1, 3) and not {groups[i] for i in train} & {groups[i] for i in valid}


def test_chat_template_that_rejects_a_row(chat_tokenizer, tmp_path: Path) -> None:
    strict = copy.deepcopy(chat_tokenizer)
    strict.chat_template = ("{% if messages[0]['role'] == 'system' %}"
                            "{{ raise_exception('no system turns') }}{% endif %}" + CHAT)
    chat = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"}]
    write_jsonl(tmp_path / "chat.jsonl", [{"messages": chat[1:]}, {"messages": chat}])
    with pytest.raises(DataError, match=r"chat\.jsonl:2: the chat template rejects this row: "
                                        "no system turns"):
        qa_dataset(tmp_path / "chat.jsonl", strict, template="chat", cache_dir=tmp_path / "c")


def test_buckets_and_stage_samples(qa) -> None:
    lengths = list(qa["num_tokens"])
    segment_size = lengths[0] // 2 + 1  # row 0 fills 2 segments, row 2 one, row 1 more
    segments = sample_segments(qa, segment_size)
    assert segments[:1] == [2] and segments[2] == 1 and segments[1] > 2
    assert bucket_counts(segments) == {1: 1, 2: 1, segments[1]: 1}
    last = segments[1]
    assert stage_samples(segments, [1, 2, last]) == [[2], [0], [1]]
    assert stage_samples(segments, [1, 2, last], vary_n_segments=[False, True, True]) == [
        [2], [0, 2], [0, 1, 2]]
    with pytest.raises(DataError, match=r"stage 1 \(2 segments of 7 tokens\) has no samples"):
        stage_samples([1, 4], [1, 2, 4], segment_size=7)


def test_long_samples_skip_truncate_error(tokenizer, qa) -> None:
    lengths = list(qa["num_tokens"])
    segment_size, max_segments = 10, -(-lengths[0] // 10)  # row 0 fits, row 1 does not
    fitted, report = fit_to_length(qa, segment_size, max_segments, "skip")
    assert (report.total, report.kept, report.skipped, report.truncated) == (3, 2, 1, 0)
    assert list(fitted["question"]) == [ROWS[0]["question"], ROWS[2]["question"]]
    fitted, report = fit_to_length(qa, segment_size, max_segments, "truncate")
    assert (report.kept, report.skipped, report.truncated) == (3, 0, 1)
    cut = fitted[1]
    assert cut["num_tokens"] == len(cut["input_ids"]) <= segment_size * max_segments
    assert scored(cut) == scored(qa[1])  # the answer is untouched
    tail = tokenizer.decode(cut["input_ids"][cut["context_start"]:cut["prompt_length"]])
    assert tail.endswith("April. \nQuestion: Where is John?\nAnswer:")  # the context's end is kept
    with pytest.raises(DataError, match=rf"qa\.jsonl:2: {lengths[1]} tokens, longer than"):
        fit_to_length(qa, segment_size, max_segments, "error")
    with pytest.raises(DataError, match="all 3 samples are longer than the last stage's 2 tokens"):
        fit_to_length(qa, 1, 2, "skip")
    assert fit_to_length(qa, 1000, 1)[0] is qa


@pytest.mark.parametrize("rows, message", [
    ([{"context": "c", "question": "q", "answer": "a"}, {"context": "c", "answer": "a"}],
     r"qa\.jsonl:2: no field 'question' \(fields: 'context', 'answer'\)"),
    ([{"context": "c", "question": "q", "answer": ""}], r"qa\.jsonl:1: field 'answer' is empty"),
    ([{"context": "c", "question": "q", "answer": 4}], r"qa\.jsonl:1: field 'answer' is int"),
    ([{"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "hi"}]}],
     r"qa\.jsonl:1: the last turn of 'messages' must be the assistant's answer"),
    ([{"messages": "hello"}], r"qa\.jsonl:1: field 'messages' is str, expected a list"),
])
def test_bad_rows_name_field_file_and_row(tokenizer, tmp_path: Path, rows, message) -> None:
    with pytest.raises(DataError, match=message) as err:
        qa_dataset(write_jsonl(tmp_path / "qa.jsonl", rows), tokenizer, cache_dir=tmp_path / "c")
    assert "\n" not in str(err.value)


def test_bad_templates(tokenizer, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "qa.jsonl", ROWS[2:])
    with pytest.raises(DataError, match=r"does not contain \{question\}"):
        qa_dataset(source, tokenizer, template="{context}\nAnswer:")
    with pytest.raises(DataError, match=r"unknown fields \['answer'\]"):
        get_template("{context} {question} {answer}")
    with pytest.raises(DataError, match="unknown template 'alpaca'"):
        get_template("alpaca")
    with pytest.raises(DataError, match="template 'chat' needs a tokenizer with a chat template"):
        qa_dataset(source, tokenizer, template="chat")
    chat = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    with pytest.raises(DataError, match="rows with 'messages' need template 'chat'"):
        qa_dataset(write_jsonl(tmp_path / "chat.jsonl", chat), tokenizer, cache_dir=tmp_path / "c")


def test_empty_dataset(tokenizer, tmp_path: Path) -> None:
    (tmp_path / "qa.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no QA rows"):
        qa_dataset(tmp_path / "qa.jsonl", tokenizer, cache_dir=tmp_path / "c")
