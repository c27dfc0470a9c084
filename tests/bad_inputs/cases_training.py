"""Malformed training configs (YAML, `key=value` overrides) and DeepSpeed JSONs.

Most run `rmt-scale train --dry-run --config FILE`: it reads and validates everything a launch
would, builds the run plan and fills the DeepSpeed JSON, and starts nothing. A few go through the
per-rank entry (`python -m rmt_scale.cli.train_worker`), which prints its own one-line errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.bad_inputs.harness import TRAIN_CONFIG, Case, Shared


def _config(**changes) -> dict:
    """The shared tiny config with `changes` ({"optimizer.lr": value}) applied."""
    values = json.loads(json.dumps(TRAIN_CONFIG))
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = values
        for key in parents:
            node = node[key]
        node[last] = value
    return values


def dry_run(name: str, content, expect: str, *overrides: str, xfail: str | None = None,
            entry: str = "cli") -> Case:
    """A case whose config file holds `content` (bytes, text, or a dict dumped as YAML)."""
    def make(case_dir: Path, shared: Shared) -> list[str]:
        file = case_dir / "config.yaml"
        if isinstance(content, bytes):
            file.write_bytes(content)
        else:
            file.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
        if entry == "worker":
            return ["--config", str(file), *overrides]
        return ["train", "--dry-run", "--config", str(file), *overrides]
    return Case(name, make, expect, entry=entry, xfail=xfail)


def deepspeed(name: str, content, expect: str, xfail: str | None = None) -> Case:
    """A case whose training config names a DeepSpeed JSON holding `content` (text, or dumped)."""
    def make(case_dir: Path, shared: Shared) -> list[str]:
        (case_dir / "ds.json").write_text(content if isinstance(content, str) else json.dumps(content))
        (case_dir / "config.yaml").write_text(yaml.safe_dump(_config(deepspeed="ds.json")))
        return ["train", "--dry-run", "--config", "config.yaml"]
    return Case(name, make, expect, xfail=xfail)


CASES = [
    dry_run("yaml-not-utf8", b"seed: 1\noutput_dir: caf\xe9\n", r"config.yaml.*UTF-8"),
    dry_run("yaml-not-utf8-worker", b"seed: 1\noutput_dir: caf\xe9\n", r"config.yaml.*UTF-8", entry="worker"),
    dry_run("yaml-invalid", "model: [unclosed\nseed: 1\n", r"config.yaml: invalid YAML at line 2"),
    dry_run("yaml-unknown-key", {**TRAIN_CONFIG, "modle": {}}, r"unknown config key.*modle.*valid keys"),
    dry_run("yaml-unknown-key-worker", {**TRAIN_CONFIG, "modle": {}}, r"unknown config key.*modle",
            entry="worker"),
    dry_run("yaml-wrong-type", _config(**{"batch.micro_batch_size": "eight"}),
            r"batch.micro_batch_size must be an integer"),
    dry_run("yaml-seed-too-large", _config(seed=2**70), r"\bseed must be between"),
    dry_run("yaml-lr-inf", _config(**{"optimizer.lr": float("inf")}), r"optimizer.lr must be a finite number"),
    dry_run("override-not-a-number", TRAIN_CONFIG, r"optimizer.lr must be a number", "optimizer.lr=fast"),
    Case("config-missing", lambda case_dir, shared: ["train", "--dry-run", "--config", "nothere.yaml"],
         r"nothere.yaml not found"),
    deepspeed("ds-zero-is-a-number", {"zero_optimization": 2}, r"zero_optimization"),
    deepspeed("ds-bf16-yes", {"bf16": "yes", "zero_optimization": {"stage": 2}}, r"bf16"),
    deepspeed("ds-unknown-optimizer", {"optimizer": {"type": "Banana", "params": {}},
                                       "zero_optimization": {"stage": 2}}, r"Banana"),
    deepspeed("ds-unknown-top-level-key", {"zero_optimizaton": {"stage": 2}}, r"zero_optimizaton"),
    deepspeed("ds-invalid-json", '{"zero_optimization": {"stage": 2}', r"ds.json: invalid JSON at line 1"),
    deepspeed("ds-stage-7", {"zero_optimization": {"stage": 7}}, r"zero_optimization.stage must be 0, 1, 2 or 3"),
]
