"""Read `rmt-scale eval` results and merge several into one: long lengths are often evaluated
apart, with fewer samples, and reports and model cards want them in one table."""

from __future__ import annotations

import json
from pathlib import Path

from rmt_scale.data.babilong import parse_length
from rmt_scale.errors import DataError, InputError
from rmt_scale.evaluation.accuracy import RESULTS_JSON
from rmt_scale.evaluation.tables import markdown_table

# Settings that must agree for cells to be merged: the model and the data they were measured on.
_SAME_MODEL = ("kind", "base", "rmt_config", "carry_memory")
_SAME_DATA = ("seed", "split", "babi_dir", "hf_name", "noise")


def read_results(path: Path) -> dict:
    """The results of `rmt-scale eval`: its output directory or the results.json in it."""
    path = Path(path)
    file = path / RESULTS_JSON if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"{file}: missing; run `rmt-scale eval --out {path}` first")
    try:
        results = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{file}: not valid JSON ({err})") from err
    except UnicodeDecodeError:
        raise InputError(f"{file}: not a text file; give the results.json of `rmt-scale eval`") from None
    if not isinstance(results, dict) or not {"settings", "results"} <= results.keys():
        raise InputError(f"{file}: not the results of `rmt-scale eval` (no settings or results)")
    return results


def _check_same(first: dict, other: dict, keys: tuple[str, ...], what: str, names: tuple[Path, Path]) -> None:
    for key in keys:
        if first.get(key) != other.get(key):
            raise InputError(f"{names[0]} and {names[1]} evaluate different {what} ({key}: "
                             f"{first.get(key)!r} vs {other.get(key)!r}); merge only one model's cells "
                             "on the same data")


def merge_results(paths: list[Path]) -> dict:
    """The cells of several evaluations as one results dict.

    The first one's model and settings are kept, with the tasks and lengths of all (lengths in
    token order) and the samples of each length; predictions are left out. Cells of another model
    or data, or a cell given twice, are an error.
    """
    tasks, lengths, cells, samples, origin = [], [], [], {}, {}
    first: dict | None = None
    for path in paths:
        results = read_results(path)
        settings = results["settings"]
        if first is None:
            first = results
        else:
            _check_same(first.get("model") or {}, results.get("model") or {}, _SAME_MODEL, "models",
                        (paths[0], path))
            _check_same(first["settings"], settings, _SAME_DATA, "data", (paths[0], path))
        tasks += [t for t in settings.get("tasks", []) if t not in tasks]
        lengths += [n for n in settings.get("lengths", []) if n not in lengths]
        for cell in results["results"]:
            key = (cell["task"], cell["length"])
            if key in origin:
                raise InputError(f"{key[0]} at {key[1]} is in both {origin[key]} and {path}; "
                                 "pass each evaluation cell once")
            origin[key] = path
            cells.append(cell)
            samples[cell["length"]] = cell.get("samples", settings.get("samples", "?"))
    try:
        lengths.sort(key=parse_length)
    except DataError:  # lengths the evaluation wrote are parseable; keep hand-made ones as given
        pass
    samples = {length: samples[length] for length in lengths if length in samples}
    merged = {"settings": {**(first or {}).get("settings", {}), "tasks": tasks, "lengths": lengths,
                           "samples": samples},
              "results": cells}
    if first is not None and "model" in first:
        merged = {"model": first["model"], **merged}
    if first is not None and "labels" in first:
        merged["labels"] = first["labels"]
    return merged


def samples_sentence(samples: dict[str, object] | object) -> str:
    """"48 samples per cell", or the count at each length when they differ."""
    if not isinstance(samples, dict):
        return f"{samples} samples per cell"
    counts = set(map(str, samples.values()))
    if len(counts) == 1:
        return f"{counts.pop()} samples per cell"
    return "samples per cell: " + ", ".join(f"{count} at {length}" for length, count in samples.items())


def accuracy_grid(results: dict) -> dict[tuple[str, str], float]:
    """Accuracy by (task, length)."""
    return {(cell["task"], cell["length"]): cell["accuracy"] for cell in results["results"]}


def accuracy_table(results: dict) -> str:
    """Markdown: one row per task, accuracy at each length ("-" where not evaluated)."""
    lengths = results["settings"]["lengths"]
    cells = accuracy_grid(results)
    rows = [[task] + ["-" if (task, n) not in cells else f"{cells[task, n]:.2f}" for n in lengths]
            for task in results["settings"]["tasks"]]
    return markdown_table(["task"] + list(lengths), rows)
