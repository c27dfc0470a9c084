"""`rmt-scale eval-lm`: loss per segment position with and without memory."""

from __future__ import annotations

import csv
import json
import math
import random

import torch

from rmt_scale.cli.main import main
from rmt_scale.data import FillerNoise
from rmt_scale.evaluation import load_eval_model
from rmt_scale.evaluation.perplexity import segment_loss_sums, without_memory
from tests.evaluation.test_eval_babilong import PNG_MAGIC


def write_text(path, sentences=400):
    rng = random.Random(0)
    filler = FillerNoise()
    path.write_text(" ".join(filler.sentence(rng) for _ in range(sentences)) + "\n")
    return path


def test_eval_lm_writes_table_json_csv_and_plot(memory_dir, tmp_path, capsys):
    text = write_text(tmp_path / "book.txt")
    out = tmp_path / "lm"
    code = main(["eval-lm", "--model", str(memory_dir), "--data", str(text), "--segments", "4",
                 "--segment-size", "16", "--samples", "3", "--batch-size", "2", "--out", str(out),
                 "--no-progress", "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| segment | tokens | loss (memory) |" in printed
    results = json.loads((out / "lm_results.json").read_text())
    assert results["settings"]["samples"] == 3 and results["settings"]["segment_size"] == 16
    segments = results["segments"]
    assert [s["segment"] for s in segments] == [1, 2, 3, 4]
    # Every position scores all its tokens; the very last token of a sample predicts nothing.
    assert [s["tokens"] for s in segments] == [48, 48, 48, 45]
    for s in segments:
        assert math.isclose(s["ppl_memory"], math.exp(s["loss_memory"]), rel_tol=1e-9)
        assert s["loss_memory"] > 0 and s["loss_no_memory"] > 0
    with (out / "lm_results.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 4
    assert (out / "lm_segments.png").read_bytes()[:8] == PNG_MAGIC


def test_without_memory_reads_each_segment_alone(memory_dir):
    memory_model = load_eval_model(memory_dir, segment_size=8, device="cpu").model
    plain = without_memory(memory_model)
    ids = torch.randint(3, 300, (1, 24))
    loss_sum, count = segment_loss_sums(plain, ids, ids)
    # Segment 2 alone: its own 8 tokens, the first one's target being segment 3's first token.
    lm = memory_model.cell.causal_lm
    with torch.no_grad():
        logits = lm(ids[:, 8:16]).logits[0]
    targets = ids[0, 9:17]
    expected = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
    torch.testing.assert_close(loss_sum[1].float(), expected, rtol=1e-4, atol=1e-4)
    assert count.tolist() == [8, 8, 7]
    with_memory, _ = segment_loss_sums(memory_model, ids, ids)
    assert not torch.allclose(with_memory[1:], loss_sum[1:])


def test_eval_lm_missing_data_file_is_a_one_line_error(memory_dir, tmp_path, capsys):
    code = main(["eval-lm", "--model", str(memory_dir), "--data", str(tmp_path / "no.txt")])
    err = capsys.readouterr().err
    assert code == 2 and "no.txt: no such file or directory" in err and err.count("\n") == 1
