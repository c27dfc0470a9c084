"""Write a benchmark's section into docs/benchmarks.md and describe the machine it ran on."""

from __future__ import annotations

import os
import platform
import re
import sys
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

