"""`rmt-scale eval` on the default SmolLM2-135M-Instruct checkpoint (slow: ~30 s on 2 CPU cores)."""

from __future__ import annotations

import json

import pytest

from rmt_scale.cli.main import main


@pytest.mark.slow
def test_eval_default_checkpoint_with_and_without_memory(default_checkpoint, tmp_path):
    common = ["--tasks", "qa1", "--lengths", "0k,1k", "--samples", "2", "--max-new-tokens", "8",
              "--dtype", "bfloat16", "--device", "cpu", "--no-progress",
              "--cache-dir", str(tmp_path / "cache")]
    assert main(["eval", "--model", str(default_checkpoint), "--out", str(tmp_path / "base"), *common]) == 0
    assert main(["eval", "--model", str(default_checkpoint), "--num-mem-tokens", "16",
                 "--segment-size", "512", "--out", str(tmp_path / "rmt"), *common]) == 0
    for name, kind in (("base", "full-attention"), ("rmt", "untrained-memory")):
        results = json.loads((tmp_path / name / "results.json").read_text())
        assert results["model"]["kind"] == kind
        assert [c["samples"] for c in results["results"]] == [2, 2]
        assert all(p["output"] for p in results["predictions"])  # the model did answer
        assert (tmp_path / name / "accuracy_heatmap.png").stat().st_size > 1000
