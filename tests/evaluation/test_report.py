"""`rmt-scale report`: report.md with the accuracy heatmap and the loss curves (PNG), from a
training directory's metrics.jsonl and `rmt-scale eval` results (written here by hand)."""

from __future__ import annotations

import json

from rmt_scale.cli.main import main
from rmt_scale.evaluation.report import LOSS_PNG, stage_starts

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(root, records):
    train = root / "train"
    train.mkdir(parents=True)
    lines = [json.dumps(r) for r in records] + ['{"kind": "train", "step": 9, "lo']  # cut by a kill
    (train / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    evaluation = root / "eval_rmt"
    evaluation.mkdir()
    results = {"settings": {"tasks": ["qa1"], "lengths": ["0k", "1k"], "samples": 3},
               "results": [{"task": "qa1", "length": "0k", "accuracy": 2 / 3},
                           {"task": "qa1", "length": "1k", "accuracy": 1 / 3}]}
    (evaluation / "results.json").write_text(json.dumps(results))
    return train, evaluation


def two_stages():
    """Stage 1 (1 segment) for steps 1-4, stage 2 (2 segments) for steps 5-8; validation every 4."""
    records = []
    for step in range(1, 9):
        stage = 0 if step <= 4 else 1
        records.append({"kind": "train", "step": step, "stage": stage, "step_in_stage": step - 4 * stage,
                        "num_segments": stage + 1, "loss": 3.0 - 0.1 * step, "lr": 1e-3,
                        "tokens": 64, "tokens_per_s": 1000.0})
        if step % 4 == 0:
            records.append({"kind": "eval", "step": step, "stage": stage, "num_segments": stage + 1,
                            "loss": 3.1 - 0.1 * step, "accuracy": 0.1 * step})
    return records


def test_report_draws_the_loss_curves_and_links_them(tmp_path, capsys):
    train, evaluation = write_run(tmp_path / "run", two_stages())
    # --out defaults to the folder that holds the training directory.
    assert main(["report", "--train", str(train), "--eval", str(evaluation)]) == 0
    report = tmp_path / "run" / "report.md"
    assert capsys.readouterr().out.strip() == str(report)
    text = report.read_text()
    assert f"![loss curves]({LOSS_PNG})" in text and "![accuracy](accuracy_rmt_vs_full.png)" in text
    for name in (LOSS_PNG, "accuracy_rmt_vs_full.png"):
        assert (tmp_path / "run" / name).read_bytes().startswith(PNG_MAGIC)
    assert "| 8 | 2 | 2 | 2.300 | 0.800 |" in text  # the validation table, stage counted from 1


def test_stage_boundaries_are_where_each_stage_began():
    records = two_stages()
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert stage_starts(train, evals) == [(0, "stage 1: 1 segment"), (4, "stage 2: 2 segments")]
    assert stage_starts([], evals) == [(4, "stage 1: 1 segment"), (8, "stage 2: 2 segments")]


def test_no_loss_records_no_plot(tmp_path):
    train, evaluation = write_run(tmp_path / "run", [])
    assert main(["report", "--train", str(train), "--eval", str(evaluation), "--out", str(tmp_path / "out")]) == 0
    assert "(no loss records)" in (tmp_path / "out" / "report.md").read_text()
    assert not (tmp_path / "out" / LOSS_PNG).exists()


def test_missing_inputs_are_one_line_errors(tmp_path, capsys):
    train, evaluation = write_run(tmp_path / "run", two_stages())
    assert main(["report", "--train", str(tmp_path), "--eval", str(evaluation)]) == 2
    assert "metrics.jsonl: missing" in capsys.readouterr().err
    (evaluation / "results.json").write_text("[]")
    assert main(["report", "--train", str(train), "--eval", str(evaluation)]) == 2
    err = capsys.readouterr().err
    assert "not the results of `rmt-scale eval`" in err and err.count("\n") == 1


def test_an_earlier_report_is_replaced_only_with_overwrite(tmp_path, capsys):
    train, evaluation = write_run(tmp_path / "run", two_stages())
    report = tmp_path / "run" / "report.md"
    report.write_text("my own notes\n")
    assert main(["report", "--train", str(train), "--eval", str(evaluation)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "report.md exists" in err and "--overwrite" in err
    assert report.read_text() == "my own notes\n"
    assert not (tmp_path / "run" / LOSS_PNG).exists()
    assert main(["report", "--train", str(train), "--eval", str(evaluation), "--overwrite"]) == 0
    assert "# Run report" in report.read_text()
