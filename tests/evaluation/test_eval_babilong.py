"""`rmt-scale eval` end to end on tiny checkpoints: files written and well formed, error paths."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from rmt_scale.cli.main import main
from rmt_scale.data import LeftPadCollator, babilong_dataset
from rmt_scale.evaluation import generate_answers, load_eval_model
from rmt_scale.evaluation.accuracy import CSV_COLUMNS
from tests.evaluation.conftest import MAX_POSITIONS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_eval(model_dir, out, tmp_path, *extra):
    return main(["eval", "--model", str(model_dir), "--out", str(out), "--no-progress",
                 "--cache-dir", str(tmp_path / "cache"), "--max-new-tokens", "4", *extra])


def test_eval_memory_model_writes_all_three_files(memory_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_eval(memory_dir, out, tmp_path, "--tasks", "qa1,qa2", "--lengths", "0k,1k",
                    "--samples", "3", "--batch-size", "2") == 0
    printed = capsys.readouterr().out
    assert "| task \\ length | 0k | 1k |" in printed and "| qa2 |" in printed

    results = json.loads((out / "results.json").read_text())
    assert results["model"]["kind"] == "memory"
    assert results["model"]["rmt_config"]["segment_size"] == 64
    assert results["settings"]["tasks"] == ["qa1", "qa2"]
    assert [(c["task"], c["length"]) for c in results["results"]] == [
        ("qa1", "0k"), ("qa1", "1k"), ("qa2", "0k"), ("qa2", "1k")]
    for cell in results["results"]:
        assert cell["samples"] == 3 and 0 <= cell["correct"] <= 3
        assert cell["accuracy"] == pytest.approx(cell["correct"] / 3)
        # With memory, every prompt token is read.
        assert cell["mean_tokens_read"] == cell["mean_prompt_tokens"]
    one_k = results["results"][1]
    assert 0.9 * 1024 < one_k["mean_prompt_tokens"] < 1.05 * 1024  # the builder estimates lengths
    assert len(results["predictions"]) == 12
    assert {"bathroom", "kitchen", "office"} <= set(results["labels"]["qa1"])
    for prediction in results["predictions"]:
        assert set(prediction) == {"task", "length", "index", "question", "answer", "output",
                                   "correct", "prompt_tokens"}

    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [(r["task"], r["length"], r["target_tokens"]) for r in rows] == [
        ("qa1", "0k", "0"), ("qa1", "1k", "1024"), ("qa2", "0k", "0"), ("qa2", "1k", "1024")]
    assert (out / "accuracy_heatmap.png").read_bytes()[:8] == PNG_MAGIC


def test_eval_base_checkpoint_is_the_truncated_full_attention_baseline(base_dir, tmp_path):
    out = tmp_path / "out"
    assert run_eval(base_dir, out, tmp_path, "--tasks", "qa1", "--lengths", "1k", "--samples", "2") == 0
    results = json.loads((out / "results.json").read_text())
    assert results["model"]["kind"] == "full-attention"
    assert results["model"]["rmt_config"] is None
    cell = results["results"][0]
    # 256 positions, 4 of them for the answer: the last 252 prompt tokens are read.
    assert cell["mean_tokens_read"] == MAX_POSITIONS - 4 < cell["mean_prompt_tokens"]


def test_batched_answers_equal_single_ones_and_every_token_is_counted(memory_dir, eval_tokenizer, tmp_path):
    model = load_eval_model(memory_dir, device="cpu")
    data = babilong_dataset("qa1", 300, 3, eval_tokenizer, seed=1, split="test", cache_dir=tmp_path)
    prompts = [{"input_ids": row["input_ids"][: row["prompt_length"]]} for row in data]
    batch = LeftPadCollator(eval_tokenizer.pad_token_id)(prompts)
    counted = []
    together = generate_answers(model, batch["input_ids"], batch["attention_mask"], 4, counted.append)
    assert sum(counted) == sum(len(p["input_ids"]) for p in prompts)
    assert len(counted) > 3  # one report per segment, not one per batch
    for row, prompt in enumerate(prompts):
        alone = generate_answers(model, torch.tensor([prompt["input_ids"]]),
                                 torch.ones(1, len(prompt["input_ids"]), dtype=torch.long), 4)
        assert together[row].tolist() == alone[0].tolist()


def test_no_carry_answers_from_the_last_segment_alone(memory_dir, eval_tokenizer, tmp_path):
    """The control run of `eval --no-carry`: each answer is what the model gives when its input is
    only the last segment, whatever the earlier segments held."""
    model = load_eval_model(memory_dir, device="cpu")
    segment = model.model.config.segment_size
    data = babilong_dataset("qa1", 300, 3, eval_tokenizer, seed=1, split="test", cache_dir=tmp_path)
    prompts = [{"input_ids": row["input_ids"][: row["prompt_length"]]} for row in data]
    assert all(len(p["input_ids"]) > 2 * segment for p in prompts)
    batch = LeftPadCollator(eval_tokenizer.pad_token_id)(prompts)
    model.carry_memory = False
    counted = []
    controlled = generate_answers(model, batch["input_ids"], batch["attention_mask"], 4, counted.append)
    assert sum(counted) == sum(len(p["input_ids"]) for p in prompts)
    model.carry_memory = True
    for row, prompt in enumerate(prompts):
        ids = prompt["input_ids"]
        last = ids[len(ids) - ((len(ids) - 1) % segment + 1):]  # segments are cut from the start
        alone = generate_answers(model, torch.tensor([last]), torch.ones(1, len(last), dtype=torch.long), 4)
        assert controlled[row].tolist() == alone[0].tolist()
    assert model.describe()["carry_memory"] is True


def test_base_with_num_mem_tokens_gets_untrained_memory(base_dir):
    model = load_eval_model(base_dir, num_mem_tokens=4, segment_size=32, device="cpu")
    assert model.kind == "untrained-memory" and model.has_memory
    assert (model.model.config.num_mem_tokens, model.model.config.segment_size) == (4, 32)


def test_segment_size_override_of_a_memory_model(memory_dir):
    model = load_eval_model(memory_dir, segment_size=16, device="cpu")
    assert model.model.config.segment_size == 16 and model.model.config.num_mem_tokens == 2


@pytest.mark.parametrize("args, message", [
    (["--model", "{tmp}/nowhere"], "nowhere: no such directory"),
    (["--model", "{tmp}"], "neither a memory model"),
    (["--model", "{base}", "--tasks", "qa1,qa99"], "unknown bAbI task 'qa99'"),
    (["--model", "{base}", "--tasks", "qa7"], "no built-in generator for 'qa7'"),
    (["--model", "{base}", "--lengths", "0k,4x"], "bad length '4x'"),
    (["--model", "{base}", "--noise", "{tmp}/missing.txt"], "no such noise file"),
    (["--model", "{base}", "--babi-dir", "{tmp}/none"], "no such bAbI directory"),
    (["--model", "{mem}", "--num-mem-tokens", "5"], "drop --num-mem-tokens"),
    (["--model", "{base}", "--segment-size", "32"], "--segment-size needs memory"),
    (["--model", "{base}", "--no-carry"], "--no-carry: {base} has no memory to leave out"),
])
def test_cli_errors_are_one_line_and_exit_2(args, message, base_dir, memory_dir, tmp_path, capsys):
    args = [a.format(tmp=tmp_path, base=base_dir, mem=memory_dir) for a in args]
    code = main(["eval", *args, "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    message = message.format(base=base_dir)
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["eval", "eval-lm"])
def test_earlier_results_are_kept_unless_overwrite(memory_dir, tmp_path, capsys, command):
    out = tmp_path / "out"
    (tmp_path / "book.txt").write_text("Mary went to the kitchen. " * 300)
    args = (["eval", "--tasks", "qa1", "--lengths", "0k", "--samples", "1", "--max-new-tokens", "2"]
            if command == "eval" else
            ["eval-lm", "--data", str(tmp_path / "book.txt"), "--segments", "2", "--samples", "1"])
    args += ["--model", str(memory_dir), "--out", str(out), "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    written = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "exists (an earlier run's results); pass --overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == written
    assert main([*args, "--overwrite"]) == 0
