"""Running one malformed input through the real command, and what is checked afterwards.

A `Case` builds its inputs in its own directory (copying the shared tiny fixtures it damages) and
returns the command line. The runner snapshots that directory and the shared fixtures (path, size,
mtime, SHA-256 of every file), runs the command in a subprocess with "y" answered to any prompt,
and snapshots again. A case passes when the command exits 2, the last line of stderr is one
`error: ...` line matching the case's pattern, no "Traceback" is printed, nothing was written,
changed or deleted, and no marker file of planted code exists.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.security_fixtures import YES_TO_EVERY_PROMPT, attack_env

# Long enough for a tiny model load on a loaded 2-core machine; a hung command fails the case.
TIMEOUT_S = 120


@dataclass(frozen=True)
class Shared:
    """Tiny fixtures built once per test module; cases read them or copy them to damage.

    Attributes:
        root: Where everything of this module lives (the commands' caches too, under env/).
        base: A tiny Llama checkpoint directory with a tokenizer.
        adapter: A LoRA + memory adapter directory on `base`.
        gguf: A complete GGUF of a tiny Llama.
        train_yaml: The text of a valid tiny training config (`OUTPUT_DIR` to be replaced).
        run: A training run directory with one complete (fabricated) checkpoint, for export.
    """

    root: Path
    base: Path
    adapter: Path
    gguf: Path
    train_yaml: str
    run: Path

    def dirs(self) -> list[Path]:
        return [self.base, self.adapter, self.gguf.parent, self.run]


@dataclass(frozen=True)
class Case:
    """One malformed input.

    Attributes:
        name: The test id.
        make: Builds the inputs under the case directory; returns the command's arguments, for
            `rmt-scale` (`entry="cli"`) or the per-rank training entry (`entry="worker"`).
        expect: A regular expression the `error:` line must match (it names the problem).
        entry: "cli" (python -m rmt_scale.cli.main) or "worker" (python -m rmt_scale.cli.train_worker).
        marker: A file (relative to the case directory) that planted code would write.
        xfail: Why the case fails today, when the fix belongs to another part of the code.
    """

    name: str
    make: Callable[[Path, Shared], list[str]]
    expect: str
    entry: str = "cli"
    marker: str | None = None
    xfail: str | None = None


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    changed: list[str]
    marker_written: bool
    seconds: float

    def error_line(self) -> str:
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""


ENTRIES = {"cli": "rmt_scale.cli.main", "worker": "rmt_scale.cli.train_worker"}


def snapshot(*roots: Path) -> dict[str, tuple]:
    """{path: (size, mtime_ns, sha256)} of every file (and {dir: ()} of every folder) under `roots`."""
    found = {}
    for root in roots:
        if root.is_file():
            found[str(root)] = _fingerprint(root)
            continue
        for folder, dirs, files in os.walk(root):
            for name in dirs:
                found[os.path.join(folder, name)] = ()
            for name in files:
                found[os.path.join(folder, name)] = _fingerprint(Path(folder, name))
    return found


def _fingerprint(path: Path) -> tuple:
    if path.is_symlink():
        return ("link", os.readlink(path))
    stat = path.stat()
    return (stat.st_size, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())


def differences(before: dict, after: dict) -> list[str]:
    added = [f"created {p}" for p in sorted(set(after) - set(before))]
    removed = [f"deleted {p}" for p in sorted(set(before) - set(after))]
    changed = [f"changed {p}" for p in sorted(set(before) & set(after)) if before[p] != after[p]]
    return added + removed + changed


def prepare(case: Case, case_dir: Path, shared: Shared) -> list[str]:
    """Build the case's inputs; returns the full command line."""
    case_dir.mkdir(parents=True)
    args = case.make(case_dir, shared)
    return [sys.executable, "-m", ENTRIES[case.entry], *args]


def run_case(case: Case, case_dir: Path, command: list[str], shared: Shared) -> Outcome:
    """Run a prepared case and compare its directory and the shared fixtures before and after."""
    watched = [case_dir, *shared.dirs()]
    before = snapshot(*watched)
    start = time.perf_counter()
    try:
        result = subprocess.run(command, input=YES_TO_EVERY_PROMPT, capture_output=True, text=True,
                                cwd=case_dir, env=attack_env(shared.root / "env"), timeout=TIMEOUT_S)
        returncode, stdout, stderr = result.returncode, result.stdout, result.stderr
    except subprocess.TimeoutExpired as err:
        returncode, stdout, stderr = -1, str(err.stdout or ""), f"{err.stderr or ''}\ntimed out after {TIMEOUT_S} s"
    marker = case_dir / case.marker if case.marker else None
    changed = differences(before, snapshot(*watched))
    return Outcome(returncode, stdout, stderr, changed, bool(marker and marker.exists()),
                   time.perf_counter() - start)


# --- the shared tiny fixtures -------------------------------------------------------------------

TRAIN_CONFIG = {
    "model": {"init": "random", "random": {"arch": "llama", "vocab_size": 64, "hidden_size": 32,
                                           "num_layers": 1, "num_heads": 2, "num_kv_heads": 1,
                                           "max_positions": 128, "seed": 0}},
    "rmt": {"num_mem_tokens": 2, "segment_size": 16},
    "lora": {"enabled": True, "r": 4, "alpha": 8, "target_modules": ["q_proj"]},
    "data": {"kind": "synthetic", "num_samples": 32, "valid_samples": 8,
             "synthetic": {"key_length": 2, "key_vocab": 8}},
    # Two steps: a config that wrongly passes validation in the worker finishes in seconds.
    "curriculum": {"stages": [{"num_segments": 1, "steps": 2}]},
    "batch": {"micro_batch_size": 2, "global_batch_size": 4},
    "optimizer": {"lr": 1.0e-3},
    "deepspeed": "zero2",
    "output_dir": "run",
    "seed": 0,
}


def build_shared(root: Path) -> Shared:
    """Write the shared fixtures under `root` (a few seconds, once per module)."""
    import json

    import yaml
    from peft import LoraConfig, get_peft_model

    from rmt_scale import RecurrentMemoryModel, RMTConfig
    from rmt_scale.training.config import config_from_dict
    from tests.export.gguf_files import tiny_llama_and_tokenizer, write_llama_gguf

    model, tokenizer = tiny_llama_and_tokenizer()
    base = root / "fixtures" / "base"
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    adapter = root / "fixtures" / "adapter"
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    RecurrentMemoryModel.wrap(lora, RMTConfig(num_mem_tokens=2, segment_size=16)).save_pretrained(
        adapter, base_model_name_or_path=str(base))
    (root / "fixtures" / "gguf").mkdir()
    gguf = write_llama_gguf(root / "fixtures" / "gguf" / "tiny.gguf", *tiny_llama_and_tokenizer())

    train_yaml = yaml.safe_dump(TRAIN_CONFIG, sort_keys=False)
    run = root / "fixtures" / "run"
    _fabricated_checkpoint(run, config_from_dict(json.loads(json.dumps(TRAIN_CONFIG))))
    return Shared(root, base, adapter, gguf, train_yaml, run)


CHECKPOINT = "checkpoints/checkpoint-000002"
MODEL_STATES = f"{CHECKPOINT}/deepspeed/mp_rank_00_model_states.pt"
OPTIM_STATES = f"{CHECKPOINT}/deepspeed/zero_pp_rank_0_mp_rank_00_optim_states.pt"


def _fabricated_checkpoint(run: Path, config) -> None:
    """A run directory with one complete ZeRO-2 checkpoint whose optimizer files are missing:
    enough for `export` to reach each file a case damages, written without training."""
    import json

    import torch

    checkpoint = run / CHECKPOINT
    (checkpoint / "deepspeed").mkdir(parents=True)
    (run / "config.yaml").write_text(config.to_yaml())
    (checkpoint / "config.yaml").write_text(config.to_yaml())
    (checkpoint / "trainer_state.json").write_text(json.dumps({"version": 1, "precision": "fp32",
                                                               "curriculum": {"global_step": 2}}))
    torch.save({"module": {}, "param_shapes": [{"cell.memory": [2, 32]}],
                "ds_config": {"zero_optimization": {"stage": 2}}}, run / MODEL_STATES)
    (checkpoint / "complete").write_text("")
