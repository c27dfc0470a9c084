"""A short report of one end-to-end run: loss curves, accuracy with memory vs full attention.

    rmt-scale report --train runs/quickstart/train --eval runs/quickstart/eval_rmt \
        --baseline runs/quickstart/eval_full --out runs/quickstart

writes `report.md`, `accuracy_rmt_vs_full.png` (one heatmap row per task and model) and
`loss_curves.png` (training and validation loss against step, curriculum stages marked).
`--eval` and `--baseline` each take one or more evaluation directories, whose cells are merged:
long lengths are often evaluated apart, with fewer samples.
"""

from __future__ import annotations

from pathlib import Path

from rmt_scale.evaluation.plots import plot_accuracy_heatmap, plot_loss_curves
from rmt_scale.evaluation.results_files import accuracy_grid, merge_results, samples_sentence
from rmt_scale.evaluation.tables import markdown_table
from rmt_scale.training.metrics import read_metrics

REPORT_MD = "report.md"
COMPARISON_PNG = "accuracy_rmt_vs_full.png"
LOSS_PNG = "loss_curves.png"
OUTPUT_FILES = (REPORT_MD, COMPARISON_PNG, LOSS_PNG)


def loss_points(records: list[dict]) -> list[tuple[int, float]]:
    """(step, loss) of the records that have both."""
    return [(r["step"], r["loss"]) for r in records
            if isinstance(r.get("step"), int) and isinstance(r.get("loss"), (int, float))]


def stage_starts(train: list[dict], evals: list[dict]) -> list[tuple[int, str]]:
    """(step at which it began, label) of each curriculum stage the records show."""
    starts: dict[int, tuple[int, str]] = {}
    for record in train or evals:
        stage = record.get("stage")
        if isinstance(stage, int) and stage not in starts and isinstance(record.get("step"), int):
            # A training record knows its step within the stage, so where the stage began exactly.
            step = record["step"] - record.get("step_in_stage", 0)
            segments = record.get("num_segments")
            plural = "" if segments == 1 else "s"
            starts[stage] = (step, f"stage {stage + 1}" + (f": {segments} segment{plural}" if segments else ""))
    return [starts[stage] for stage in sorted(starts)]


def as_paths(dirs: str | Path | list | None) -> list[Path]:
    return [Path(d) for d in ([dirs] if isinstance(dirs, (str, Path)) else dirs or [])]


def quoted(paths: list[Path]) -> str:
    return ", ".join(f"`{p}`" for p in paths)


def write_run_report(train_dir: str | Path, eval_dirs: str | Path | list, baseline_dirs: str | Path | list | None,
                     out_dir: str | Path) -> Path:
    """Write `report.md`, the accuracy heatmap and the loss curves into `out_dir`; returns the
    report's path. `eval_dirs` and `baseline_dirs`: one evaluation directory or a list of them."""
    eval_list, baseline_list = as_paths(eval_dirs), as_paths(baseline_dirs)
    train_dir, out_dir = Path(train_dir), Path(out_dir)
    records = read_metrics(train_dir)
    trains = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    rmt = merge_results(eval_list)
    full = merge_results(baseline_list) if baseline_list else None
    tasks, lengths = rmt["settings"]["tasks"], rmt["settings"]["lengths"]
    rows, names, grid = [], [], []
    for label, results in (("RMT (memory)", rmt), ("full attention", full)):
        if results is None:
            continue
        cells = accuracy_grid(results)
        for task in tasks:
            values = [cells.get((task, length)) for length in lengths]
            names.append(f"{task} {label}")
            grid.append(values)
            rows.append([task, label] + ["-" if v is None else f"{100 * v:.0f}" for v in values])
    out_dir.mkdir(parents=True, exist_ok=True)
    heatmap = plot_accuracy_heatmap(grid, names, lengths, out_dir / COMPARISON_PNG,
                                    title="BABILong accuracy (%): memory vs full attention")
    curves = "(no loss records)"
    if loss_points(trains) or loss_points(evals):
        plot = plot_loss_curves(loss_points(trains), loss_points(evals), stage_starts(trains, evals),
                                out_dir / LOSS_PNG, title=f"loss of {train_dir}")
        curves = f"![loss curves]({plot.name})"
    curve = markdown_table(
        ["step", "stage", "segments", "validation loss", "validation accuracy"],
        [[m["step"], m["stage"] + 1, m["num_segments"], f"{m['loss']:.3f}", f"{m['accuracy']:.3f}"]
         for m in evals],
    ) if evals else "(no validation records)"
    throughput = ""
    if trains:
        mean = sum(m.get("tokens_per_s", 0.0) for m in trains) / len(trains)
        throughput = f"Mean training throughput: {mean:,.0f} tokens/s over {trains[-1]['step']} steps.\n"
    text = f"""# Run report

Training: `{train_dir}` · evaluation with memory: {quoted(eval_list)}""" + (
        f" · full-attention baseline: {quoted(baseline_list)}" if baseline_list else "") + f"""

## Accuracy against context length

{samples_sentence(rmt["settings"]["samples"])}; BABILong scoring (see docs/evaluation.md). Full attention truncates the
context to what the base model can take; the memory model reads all of it segment by segment.

![accuracy]({heatmap.name})

{markdown_table(["task", "model"] + list(lengths), rows)}

## Training

{curves}

{throughput}
{curve}

Files: the exported adapter loads with `RecurrentMemoryModel.from_pretrained(DIR)` or plain
`peft.PeftModel.from_pretrained(base, DIR)` (memory beside it); `results.json` in each evaluation
directory holds every generated answer.
"""
    report = out_dir / REPORT_MD
    report.write_text(text)
    return report
