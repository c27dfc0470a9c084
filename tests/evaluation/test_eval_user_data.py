"""`rmt-scale eval --data`: your own QA rows (exact match and contains per prompt-length bucket) and
the official BABILong layout (official prompt and scorer); `eval-lm --data` on any text source."""

from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from rmt_scale.cli.main import main
from rmt_scale.data import BABILONG_PROMPTS
from rmt_scale.evaluation import accuracy, qa_eval
from rmt_scale.evaluation.scoring import contains_answer, exact_match

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HAYSTACK = "The fog drifted across the quiet meadow. "

# Rows and the outputs a fake model gives them: (context, question, answer, output, exact, contains).
ROWS = [
    ("Mary went to the kitchen.", "Where is Mary?", "kitchen", " Kitchen.\nQuestion: more", True, True),
    ("John took the apple to the garden.", "Where is the apple?", "the garden", " in the garden", False, True),
    ("Sandra moved to the office.", "Where is Sandra?", "office", " hallway", False, False),
    (HAYSTACK * 60 + "Daniel went to the hallway.", "Where is Daniel?", "hallway", " hallway", True, True),
]
# Official qa1 rows with outputs whose official score (booydar/babilong metrics.compare_answers)
# is known: (target, output, question, official result).
OFFICIAL = [
    ("kitchen", "The most recent location of Mary is kitchen.", "Where is Mary?", True),
    ("kitchen", "Mary is in the garden. Earlier: kitchen.", "Where is Mary?", False),
    ("kitchen", " Kitchen\nQuestion: Where is the garden?", "Where is Mary?", False),
    ("kitchen", "kitchen <example> garden", "Where is Mary?", True),
    ("office", "office", "Where is Sandra?", True),
]


def fake_generation(monkeypatch, module, tokenizer, answer_for):
    """Replace `module.generate_answers` by a model that writes `answer_for(prompt text)`."""
    prompts = []

    def generate(eval_model, input_ids, attention_mask, max_new_tokens, on_tokens=None):
        outputs = []
        for ids, mask in zip(input_ids, attention_mask, strict=True):
            prompt = tokenizer.decode(ids[mask.bool()], skip_special_tokens=True)
            prompts.append(prompt)
            outputs.append(tokenizer(answer_for(prompt), add_special_tokens=False)["input_ids"])
        width = max(len(o) for o in outputs)
        return torch.tensor([o + [tokenizer.pad_token_id] * (width - len(o)) for o in outputs])

    monkeypatch.setattr(module, "generate_answers", generate)
    return prompts


def run_eval(model_dir, out, tmp_path, *extra):
    return main(["eval", "--model", str(model_dir), "--out", str(out), "--no-progress",
                 "--cache-dir", str(tmp_path / "cache"), "--max-new-tokens", "4", *extra])


def test_exact_match_and_contains_are_normalised():
    assert exact_match("the garden", "Garden!") and not exact_match("garden", "the big garden")
    assert contains_answer("garden", "It is in the GARDEN.") and not contains_answer("den", "garden")
    assert not contains_answer("", "anything")


def test_your_qa_rows_are_scored_per_length_bucket(memory_dir, eval_tokenizer, tmp_path, monkeypatch, capsys):
    rows = tmp_path / "qa.jsonl"
    rows.write_text("".join(json.dumps({"document": c, "question": q, "answer": a}) + "\n"
                            for c, q, a, *_ in ROWS))
    outputs = {q: o for _, q, _, o, *_ in ROWS}
    fake_generation(monkeypatch, qa_eval, eval_tokenizer,
                    lambda prompt: next(o for q, o in outputs.items() if q in prompt))
    out = tmp_path / "out"
    assert run_eval(memory_dir, out, tmp_path, "--data", str(rows), "--fields", "context=document",
                    "--batch-size", "2") == 0
    printed = capsys.readouterr().out
    assert "| score \\ prompt tokens | ≤1k | ≤2k |" in printed
    assert "| exact match | 33 | 100 |" in printed and "| contains | 67 | 100 |" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["tasks"] == ["exact match", "contains"]
    assert results["settings"]["template"] == "plain" and results["settings"]["fields"] == {"context": "document"}
    predictions = results["predictions"]
    assert [(p["correct"], p["contains"]) for p in predictions] == [(e, c) for *_, e, c in ROWS]
    assert [p["source"] for p in predictions] == [f"{rows}:{i}" for i in range(1, 5)]
    with (out / "results.csv").open() as handle:
        cells = [(r["task"], r["length"], r["target_tokens"], r["samples"], r["correct"])
                 for r in csv.DictReader(handle)]
    assert cells == [("exact match", "≤1k", "1024", "3", "1"), ("contains", "≤1k", "1024", "3", "2"),
                     ("exact match", "≤2k", "2048", "1", "1"), ("contains", "≤2k", "2048", "1", "1")]
    assert (out / "accuracy_heatmap.png").read_bytes()[:8] == PNG_MAGIC


def test_your_qa_rows_with_the_model_answering(memory_dir, tmp_path):
    rows = tmp_path / "qa.parquet"
    pq.write_table(pa.Table.from_pylist([{"context": c, "question": q, "answer": a}
                                         for c, q, a, *_ in ROWS[:2]]), rows)
    out = tmp_path / "out"
    assert run_eval(memory_dir, out, tmp_path, "--data", str(rows), "--template", "babilong") == 0
    results = json.loads((out / "results.json").read_text())
    assert [c["samples"] for c in results["results"]] == [2, 2]
    assert results["settings"]["template"] == "babilong"


def write_official(root):
    """A tiny copy of the official layout: ROOT/<length>/<task>-00000-of-00001.parquet."""
    rows = [{"input": f"{HAYSTACK * 3}Fact {i}. {HAYSTACK}", "question": question, "target": target}
            for i, (target, _, question, _) in enumerate(OFFICIAL)]
    for length in ("0k", "1k"):
        (root / length).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), root / length / "qa1-00000-of-00001.parquet")
    return root


def test_the_official_layout_uses_the_official_prompt_and_scorer(memory_dir, eval_tokenizer, tmp_path,
                                                                  monkeypatch):
    root = write_official(tmp_path / "babilong")
    prompts = fake_generation(monkeypatch, accuracy, eval_tokenizer,
                              lambda prompt: OFFICIAL[int(prompt.split("Fact ")[1].split(".")[0])][1])
    out = tmp_path / "out"
    assert run_eval(memory_dir, out, tmp_path, "--data", str(root)) == 0  # every task and length it has
    results = json.loads((out / "results.json").read_text())
    assert [(c["task"], c["length"], c["correct"]) for c in results["results"]] == [
        ("qa1", "0k", 3), ("qa1", "1k", 3)]
    assert [p["correct"] for p in results["predictions"][:5]] == [known for *_, known in OFFICIAL]
    assert all(p.startswith(BABILONG_PROMPTS["qa1"]["instruction"]) for p in prompts)
    assert prompts[0].endswith("</context>\n\nQuestion: Where is Mary?")


def test_cells_the_official_layout_lacks_are_left_out(memory_dir, eval_tokenizer, tmp_path,
                                                       monkeypatch, capsys):
    root = write_official(tmp_path / "babilong")
    (root / "1k" / "qa1-00000-of-00001.parquet").rename(root / "1k" / "qa2-00000-of-00001.parquet")
    fake_generation(monkeypatch, accuracy, eval_tokenizer, lambda prompt: "kitchen")
    assert run_eval(memory_dir, tmp_path / "out", tmp_path, "--data", str(root), "--samples", "1") == 0
    assert "| qa1 | 100 | - |\n| qa2 | - | 100 |" in capsys.readouterr().out
    # Asked for explicitly, a missing cell is an error naming what there is.
    assert run_eval(memory_dir, tmp_path / "out2", tmp_path, "--data", str(root), "--tasks", "qa1",
                    "--lengths", "0k,1k") == 2
    assert "no BABILong data for qa1 at 1k; it has 0k: qa1; 1k: qa2" in capsys.readouterr().err


def test_eval_lm_reads_the_sources_of_data_kind_text(memory_dir, tmp_path):
    rows = tmp_path / "docs" / "books.jsonl"
    rows.parent.mkdir()
    rows.write_text(json.dumps({"body": "Mary went to the kitchen. " * 60}) + "\n"
                    + json.dumps({"body": "Too short."}) + "\n")
    out = tmp_path / "lm"
    assert main(["eval-lm", "--model", str(memory_dir), "--data", str(rows.parent), "--field", "body",
                 "--segments", "2", "--segment-size", "16", "--samples", "4", "--out", str(out),
                 "--no-progress", "--cache-dir", str(tmp_path / "cache")]) == 0
    results = json.loads((out / "lm_results.json").read_text())
    assert results["settings"]["samples"] == 4 and [s["tokens"] for s in results["segments"]] == [64, 60]


@pytest.mark.parametrize("rows, extra, message", [
    ('{"context": "c", "answer": "a"}\n', [], "{data}:1: no field 'question' (fields: 'context', 'answer')"),
    ('{"context": "c", "question": "q", "answer": "a"}\n{"context": "c", "question": "q", "answer": 3}\n',
     [], "{data}:2: field 'answer' is int, expected text"),
    ("\n", [], "{data}: no QA rows"),
    ('{"context": "c", "question": "q", "answer": "a"}\n', ["--template", "{{context}} Answer:"],
     "does not contain {{question}}"),
    ('{"context": "c", "question": "q", "answer": "a"}\n', ["--fields", "context"],
     "--fields 'context': expected KEY=NAME pairs"),
    ('{"context": "c", "question": "q", "answer": "a"}\n', ["--tasks", "qa1"],
     "--tasks and --lengths select official BABILong data"),
])
def test_bad_data_is_one_line_before_the_model_loads(memory_dir, tmp_path, capsys, rows, extra, message):
    data = tmp_path / "qa.jsonl"
    data.write_text(rows)
    code = run_eval(memory_dir, tmp_path / "out", tmp_path, "--data", str(data), *extra)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert message.format(data=data) in err and not (tmp_path / "out").exists()


def test_text_that_is_not_utf8_and_a_chat_template_the_tokenizer_lacks(memory_dir, tmp_path, capsys):
    data = tmp_path / "qa.jsonl"
    data.write_bytes(b'{"context": "c", "question": "q", "answer": "a"}\n{"context": "caf\xe9"}\n')
    assert run_eval(memory_dir, tmp_path / "out", tmp_path, "--data", str(data)) == 2
    assert capsys.readouterr().err == f"error: {data}:2: bytes that are not UTF-8 at offset 65\n"
    data.write_text('{"context": "c", "question": "q", "answer": "a"}\n')
    assert run_eval(memory_dir, tmp_path / "out", tmp_path, "--data", str(data), "--template", "chat") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert errors == ["error: template 'chat' needs a tokenizer with a chat template, and this one has "
                      "none; use template 'babilong' or 'plain', or a chat model"]
    assert not (tmp_path / "out").exists()


def test_the_official_layout_names_what_it_has(memory_dir, tmp_path, capsys):
    root = write_official(tmp_path / "babilong")
    assert run_eval(memory_dir, tmp_path / "out", tmp_path, "--data", str(root), "--tasks", "qa2") == 2
    err = capsys.readouterr().err
    assert err == f"error: {root}: no BABILong data for qa2 at 0k; it has 0k: qa1; 1k: qa1\n"
    assert run_eval(memory_dir, tmp_path / "out", tmp_path, "--data", str(root), "--fields", "a=b") == 2
    assert "its own fields" in capsys.readouterr().err and not (tmp_path / "out").exists()
