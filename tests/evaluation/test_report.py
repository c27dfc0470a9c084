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


def write_eval(path, lengths, samples, accuracy):
    path.mkdir(parents=True)
    results = {"settings": {"tasks": ["qa1"], "lengths": lengths, "samples": samples},
               "results": [{"task": "qa1", "length": n, "samples": samples, "accuracy": accuracy} for n in lengths]}
    (path / "results.json").write_text(json.dumps(results))
    return str(path)


def test_several_evaluations_are_merged_cell_by_cell(tmp_path):
    train, _ = write_run(tmp_path / "run", two_stages())
    short = write_eval(tmp_path / "short", ["256", "8k"], 48, 0.75)
    long = write_eval(tmp_path / "long", ["16k", "2k"], 24, 0.25)
    base = write_eval(tmp_path / "base", ["2k"], 48, 0.0)
    out = tmp_path / "out"
    assert main(["report", "--train", str(train), "--eval", long, short, "--baseline", base, "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    # Lengths in token order whichever directory held them; a cell no evaluation has is "-".
    assert "| task | model | 256 | 2k | 8k | 16k |" in text
    assert "| qa1 | RMT (memory) | 75 | 25 | 75 | 25 |" in text
    assert "| qa1 | full attention | - | 0 | - | - |" in text
    assert "samples per cell: 48 at 256, 24 at 2k, 48 at 8k, 24 at 16k" in text


def test_a_cell_in_two_evaluations_is_a_one_line_error(tmp_path, capsys):
    train, _ = write_run(tmp_path / "run", two_stages())
    first = write_eval(tmp_path / "first", ["2k"], 48, 0.5)
    second = write_eval(tmp_path / "second", ["2k", "4k"], 24, 0.25)
    out = tmp_path / "out"
    assert main(["report", "--train", str(train), "--eval", first, second, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "qa1 at 2k is in both" in err and "pass each evaluation cell once" in err
    assert not out.exists()
