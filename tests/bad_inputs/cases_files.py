"""Malformed adapters, data files (bAbI, text) and command-line arguments."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.bad_inputs.harness import Case, Shared

LATIN1 = "Marie est allée à la cuisine. ".encode("latin-1") * 20
BINARY = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
GENERATE = ["--prompt", "Where is Mary?", "--max-new-tokens", "2", "--device", "cpu"]


def _adapter(name: str, damage, expect: str, command: str = "generate") -> Case:
    """`generate --model ADAPTER` (or `merge`) on a copy of the shared adapter after `damage(dir)`."""
    def make(case_dir: Path, shared: Shared) -> list[str]:
        adapter = Path(shutil.copytree(shared.adapter, case_dir / "adapter"))
        damage(adapter)
        if command == "merge":
            return ["merge", "--adapter", "adapter", "--out", "merged"]
        return ["generate", "--model", "adapter", *GENERATE]
    return Case(name, make, expect)


def _write(name: str, data):
    def damage(adapter: Path) -> None:
        file = adapter / name
        if data is None:
            file.unlink()
        elif callable(data):
            file.write_bytes(data(file.read_bytes()))
        else:
            file.write_bytes(data if isinstance(data, bytes) else data.encode())
    return damage


def _edit_json(name: str, **changes):
    def damage(adapter: Path) -> None:
        values = json.loads((adapter / name).read_text())
        (adapter / name).write_text(json.dumps({**values, **changes}))
    return damage


def _nan_memory(adapter: Path) -> None:
    save_file({"memory": torch.full((2, 32), float("nan"))}, str(adapter / "memory.safetensors"))


ADAPTER_CASES = [
    _adapter("adapter-weights-truncated", _write("adapter_model.safetensors", lambda b: b[: len(b) // 2]),
             r"adapter_model.safetensors: unreadable or truncated"),
    _adapter("adapter-weights-random", _write("adapter_model.safetensors", bytes(range(256)) * 64),
             r"adapter_model.safetensors: unreadable or truncated"),
    _adapter("adapter-weights-missing", _write("adapter_model.safetensors", None),
             r"adapter_model.safetensors: LoRA weights missing"),
    _adapter("adapter-config-r-eight", _edit_json("adapter_config.json", r="eight"),
             r"adapter_config.json: r must be a number, got 'eight'"),
    _adapter("adapter-config-not-json", _write("adapter_config.json", "{'r': 8"), r"adapter_config.json: not valid JSON"),
    _adapter("rmt-base-path-a-number", _edit_json("rmt_base.json", base_model_name_or_path=7),
             r"rmt_base.json: base_model_name_or_path must be a path"),
    _adapter("rmt-config-wrong-type", _edit_json("rmt_config.json", num_mem_tokens="two"), r"num_mem_tokens"),
    _adapter("memory-missing", _write("memory.safetensors", None), r"memory.safetensors: memory file missing"),
    _adapter("memory-nan", _nan_memory, r"memory holds NaN or inf"),
    _adapter("base-moved-away", _edit_json("rmt_base.json", base_model_name_or_path="/nowhere/base"),
             r"'/nowhere/base' recorded in adapter is neither a local directory.*pass --base"),
    _adapter("merge-adapter-weights-missing", _write("adapter_model.safetensors", None),
             r"LoRA weights missing", command="merge"),
]


# --- data files -----------------------------------------------------------------------------------


def _eval_lm(name: str, data: bytes, expect: str) -> Case:
    def make(case_dir: Path, shared: Shared) -> list[str]:
        (case_dir / "book.txt").write_bytes(data)
        return ["eval-lm", "--model", str(shared.adapter), "--data", "book.txt", "--out", "out", "--device", "cpu"]
    return Case(name, make, expect)


def _babi(name: str, test_file: bytes, expect: str) -> Case:
    def make(case_dir: Path, shared: Shared) -> list[str]:
        (case_dir / "babi").mkdir()
        (case_dir / "babi" / "qa1_single-supporting-fact_train.txt").write_text(
            "1 Mary moved to the bathroom.\n2 Where is Mary?\tbathroom\t1\n")
        (case_dir / "babi" / "qa1_single-supporting-fact_test.txt").write_bytes(test_file)
        return ["eval", "--model", str(shared.adapter), "--babi-dir", "babi", "--tasks", "qa1",
                "--lengths", "0k", "--samples", "1", "--out", "out", "--device", "cpu"]
    return Case(name, make, expect)


def _noise(case_dir: Path, shared: Shared) -> list[str]:
    (case_dir / "book.bin").write_bytes(BINARY)
    return ["eval", "--model", str(shared.adapter), "--noise", "book.bin", "--lengths", "1k",
            "--samples", "1", "--out", "out", "--device", "cpu"]


def _prompt_file(case_dir: Path, shared: Shared) -> list[str]:
    (case_dir / "prompt.txt").write_bytes(LATIN1)
    return ["generate", "--model", str(shared.adapter), "--prompt-file", "prompt.txt", "--device", "cpu"]


DATA_CASES = [
    _eval_lm("text-latin1", LATIN1, r"book.txt:1: bytes that are not UTF-8"),
    _eval_lm("text-binary", BINARY, r"book.txt: a binary file"),
    _eval_lm("text-empty", b"", r"book.txt: empty"),
    _babi("babi-malformed-line", b"1 Mary moved to the bathroom.\nWhere is Mary? bathroom\n", r"qa1_.*_test.txt:2"),
    _babi("babi-not-utf8", "1 Marie est allée.\n2 Où?\tcuisine\t1\n".encode("latin-1"), r"qa1_.*_test.txt.*UTF-8"),
    Case("noise-binary", _noise, r"book.bin: a binary file"),
    Case("prompt-file-latin1", _prompt_file, r"prompt.txt:1: bytes that are not UTF-8"),
]


# --- command-line arguments -----------------------------------------------------------------------


def _cli(name: str, expect: str, *args: str, build=None) -> Case:
    """`rmt-scale ARGS`, with {adapter} / {base} replaced by the shared fixtures."""
    def make(case_dir: Path, shared: Shared) -> list[str]:
        if build is not None:
            build(case_dir, shared)
        return [a.format(adapter=shared.adapter, base=shared.base) for a in args]
    return Case(name, make, expect)


def _earlier_results(case_dir: Path, shared: Shared) -> None:
    (case_dir / "out").mkdir()
    (case_dir / "out" / "results.json").write_text('{"settings": {}, "results": []}\n')


CLI_CASES = [
    _cli("device-banana", r"unknown device 'banana'", "generate", "--model", "{adapter}", "--prompt", "hi",
         "--device", "banana"),
    _cli("eval-bad-length", r"5q", "eval", "--model", "{adapter}", "--lengths", "0k,5q", "--out", "out"),
    _cli("eval-zero-samples", r"--samples must be >= 1", "eval", "--model", "{adapter}", "--samples", "0",
         "--out", "out"),
    _cli("eval-unknown-task", r"qa99", "eval", "--model", "{adapter}", "--tasks", "qa99", "--out", "out"),
    _cli("eval-samples-not-a-number", r"--samples: invalid int value: 'abc'", "eval", "--model", "{adapter}",
         "--samples", "abc", "--out", "out"),
    _cli("eval-earlier-results", r"results.json exists .*pass --overwrite", "eval", "--model", "{adapter}",
         "--samples", "1", "--lengths", "0k", "--out", "out", build=_earlier_results),
    _cli("generate-top-p-2", r"--top-p must be in \(0, 1\]", "generate", "--model", "{adapter}", "--prompt", "hi",
         "--top-p", "2"),
    _cli("merge-out-is-the-adapter", r"is the input", "merge", "--adapter", "adapter", "--out", "adapter",
         "--overwrite", build=lambda case_dir, shared: shutil.copytree(shared.adapter, case_dir / "adapter")),
    _cli("report-train-missing", r"nothere", "report", "--train", "nothere", "--eval", "nothere-either"),
]

CASES = ADAPTER_CASES + DATA_CASES + CLI_CASES
