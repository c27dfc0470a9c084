"""Write a benchmark's section into docs/benchmarks.md, describe the machine it ran on, and keep the
finished runs of a long benchmark so a stopped one resumes."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import sys
from collections.abc import Callable
from pathlib import Path

from rmt_scale.evaluation.tables import markdown_table  # noqa: F401  (re-exported for the benchmarks)


def machine_description() -> str:
    import torch
    import transformers

    device = "CPU"
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    return (
        f"{device}; {os.cpu_count()} CPU cores ({cpu}); Python {sys.version.split()[0]}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}"
    )


def write_section(doc: Path, name: str, body: str) -> None:
    """Replace (or append) the `<!-- bench:name -->` section of `doc` with `body`."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = doc.read_text() if doc.is_file() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def load_runs(path: Path) -> list[dict]:
    """The finished runs recorded in `path` (none if it does not exist)."""
    if not path.is_file():
        return []
    try:
        runs = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SystemExit(f"error: {path} is not a results file of this benchmark ({err}); move it away "
                         f"or pass another --results") from None
    if not isinstance(runs, list):
        raise SystemExit(f"error: {path} is not a results file of this benchmark (not a list of runs); "
                         f"move it away or pass another --results")
    return runs


def save_run(path: Path, result: dict, identity: Callable[[dict], object]) -> None:
    """Add one run to the results file, replacing a run of the same `identity`, under a lock
    (`--only` processes may share the file) and atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        runs = [r for r in load_runs(path) if identity(r) != identity(result)]
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(runs + [result], indent=1) + "\n")
        tmp.replace(path)
