"""A short report of one end-to-end run: training curve, accuracy with memory vs full attention.

    rmt-scale report --train runs/quickstart/train --eval runs/quickstart/eval_rmt \
        --baseline runs/quickstart/eval_full --out runs/quickstart

writes `report.md` and `accuracy_rmt_vs_full.png` (one heatmap row per task and model).
"""

from __future__ import annotations

import json
from pathlib import Path

from rmt_scale.errors import InputError
from rmt_scale.evaluation.accuracy import RESULTS_JSON
from rmt_scale.evaluation.plots import plot_accuracy_heatmap
from rmt_scale.evaluation.tables import markdown_table


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: missing; run the step that writes it first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from err


def read_metrics(train_dir: Path) -> list[dict]:
    path = train_dir / "metrics.jsonl"
    if not path.is_file():
        raise InputError(f"{path}: missing; is {train_dir} a training output directory?")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill: the rest of the log is still good
    return records


def accuracy_grid(results: dict) -> dict[tuple[str, str], float]:
    return {(cell["task"], cell["length"]): cell["accuracy"] for cell in results["results"]}


def write_run_report(train_dir: str | Path, eval_dir: str | Path, baseline_dir: str | Path | None,
                     out_dir: str | Path) -> Path:
    """Write `report.md` (+ comparison heatmap) into `out_dir`; returns the report's path."""
    train_dir, eval_dir, out_dir = Path(train_dir), Path(eval_dir), Path(out_dir)
    metrics = read_metrics(train_dir)
    rmt = read_json(eval_dir / RESULTS_JSON)
    full = read_json(Path(baseline_dir) / RESULTS_JSON) if baseline_dir else None
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
    heatmap = plot_accuracy_heatmap(grid, names, lengths, out_dir / "accuracy_rmt_vs_full.png",
                                    title="BABILong accuracy (%): memory vs full attention")
    evals = [m for m in metrics if m.get("kind") == "eval"]
    trains = [m for m in metrics if m.get("kind") == "train"]
    curve = markdown_table(
        ["step", "stage", "segments", "validation loss", "validation accuracy"],
        [[m["step"], m["stage"] + 1, m["num_segments"], f"{m['loss']:.3f}", f"{m['accuracy']:.3f}"]
         for m in evals],
    ) if evals else "(no validation records)"
    throughput = ""
    if trains:
        mean = sum(m.get("tokens_per_s", 0.0) for m in trains) / len(trains)
        throughput = f"Mean training throughput: {mean:,.0f} tokens/s over {trains[-1]['step']} steps.\n"
    samples = rmt["settings"].get("samples", "?")
    text = f"""# Run report

Training: `{train_dir}` · evaluation with memory: `{eval_dir}`""" + (
        f" · full-attention baseline: `{baseline_dir}`" if baseline_dir else "") + f"""

## Accuracy against context length

{samples} samples per cell; BABILong scoring (see docs/evaluation.md). Full attention truncates the
context to what the base model can take; the memory model reads all of it segment by segment.

![accuracy]({heatmap.name})

{markdown_table(["task", "model"] + list(lengths), rows)}

## Training

{throughput}
{curve}

Files: the exported adapter loads with `RecurrentMemoryModel.from_pretrained(DIR)` or plain
`peft.PeftModel.from_pretrained(base, DIR)` (memory beside it); `results.json` in each evaluation
directory holds every generated answer.
"""
    report = out_dir / "report.md"
    report.write_text(text)
    return report
