"""No checkpoint code runs unless the user asks by name (issue 11, item 2).

Two halves:

* A scan of the source: every `X.from_pretrained(...)` / `X.from_config(...)` in rmt_scale/,
  benchmarks/ and launch/ passes `trust_remote_code=` explicitly, and never a literal True (True
  comes only from the user's flag or config key). Left unset, transformers asks "run the custom
  code? [y/N]" and a `y` runs it, so a new call cannot forget the keyword. Exempt are receivers
  that cannot import code from a checkpoint: PEFT's loaders (they read adapter_config.json and
  safetensors only) and RecurrentMemoryModel (it reaches transformers only through
  `load_causal_lm`, whose own call is scanned).
* End to end: a checkpoint whose config.json maps its architecture to a module that writes a
  marker when imported (tests/security_fixtures.py) is loaded by eval, eval-lm, generate and
  merge with "y" on stdin; the marker never appears and the command says what to do in one line.
  With --trust-remote-code the same command does run it: the fixture is live.
"""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest
import torch

from tests.security_fixtures import (
    YES_TO_EVERY_PROMPT,
    attack_env,
    cli_command,
    write_remote_code_checkpoint,
)

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("rmt_scale", "benchmarks", "launch")
LOADERS = ("from_pretrained", "from_config")
EXEMPT_RECEIVERS = {"PeftModel", "PeftConfig", "RecurrentMemoryModel"}


def _receiver(func: ast.Attribute) -> str:
    """The last name of what `.from_pretrained` is called on: `transformers.AutoConfig` -> AutoConfig."""
    value = func.value
    if isinstance(value, ast.Attribute):
        return value.attr
    if isinstance(value, ast.Name):
        return value.id
    return ast.unparse(value)


def unsafe_loads(source: str, filename: str = "<source>") -> list[str]:
    """`file:line receiver.method` of every loader call that leaves `trust_remote_code` unset or
    sets it to a literal True."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in LOADERS):
            continue
        receiver = _receiver(node.func)
        if receiver in EXEMPT_RECEIVERS:
            continue
        keyword = next((k for k in node.keywords if k.arg == "trust_remote_code"), None)
        literal_true = (keyword is not None and isinstance(keyword.value, ast.Constant)
                        and keyword.value.value is True)
        if keyword is None or literal_true:
            found.append(f"{filename}:{node.lineno} {receiver}.{node.func.attr}")
    return found


def loader_calls() -> dict[str, list[str]]:
    """{file: [receiver.method, ...]} of every loader call in the scanned trees."""
    calls = {}
    for top in SCANNED:
        for file in sorted((ROOT / top).rglob("*.py")):
            tree = ast.parse(file.read_text(), str(file))
            names = [f"{_receiver(n.func)}.{n.func.attr}" for n in ast.walk(tree)
                     if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in LOADERS]
            if names:
                calls[str(file.relative_to(ROOT))] = names
    return calls


def test_the_scan_flags_a_forgotten_or_forced_keyword():
    source = ("from transformers import AutoTokenizer as Tok\n"
              "a = AutoModelForCausalLM.from_pretrained(p)\n"
              "b = Tok.from_pretrained(p, trust_remote_code=True)\n"
              "c = transformers.AutoConfig.from_pretrained(p, trust_remote_code=flag)\n"
              "d = PeftModel.from_pretrained(base, p)\n"
              "e = AutoModelForCausalLM.from_config(config)\n")
    assert unsafe_loads(source) == ["<source>:2 AutoModelForCausalLM.from_pretrained",
                                    "<source>:3 Tok.from_pretrained",
                                    "<source>:6 AutoModelForCausalLM.from_config"]


def test_every_load_sets_trust_remote_code_explicitly():
    calls = loader_calls()
    # The scan sees the loads it must see (a scan that finds nothing would pass vacuously).
    assert "AutoModelForCausalLM.from_pretrained" in calls["rmt_scale/model/loading.py"]
    assert "AutoTokenizer.from_pretrained" in calls["rmt_scale/model/loading.py"]
    assert {"AutoConfig.from_pretrained", "AutoTokenizer.from_pretrained"} <= set(calls["rmt_scale/export/gguf.py"])
    assert "AutoConfig.from_pretrained" in calls["rmt_scale/export/merge.py"]
    unsafe = [hit for file in calls for hit in unsafe_loads((ROOT / file).read_text(), file)]
    assert not unsafe, f"loads that leave trust_remote_code unset (or force it on): {unsafe}"


# --- end to end: the checkpoint's code never runs ------------------------------------------------


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """The remote-code base, an adapter on it (LoRA + memory), and a prompt file."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    from rmt_scale import RecurrentMemoryModel, RMTConfig
    from tests.tiny_models import tiny_config

    root = tmp_path_factory.mktemp("remote-code")
    checkpoint = write_remote_code_checkpoint(root)
    config = tiny_config("llama", vocab_size=json.loads((checkpoint.path / "config.json").read_text())["vocab_size"])
    torch.manual_seed(0)
    base = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=2, target_modules=["q_proj"]))
    adapter = root / "adapter"
    RecurrentMemoryModel.wrap(base, RMTConfig(num_mem_tokens=2, segment_size=16)).save_pretrained(
        adapter, base_model_name_or_path=str(checkpoint.path))
    (root / "book.txt").write_text("the cat sat on the mat. " * 200)
    assert not checkpoint.code_ran()
    return root, checkpoint, adapter


def _run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), input=YES_TO_EVERY_PROMPT, capture_output=True, text=True,
                          env=attack_env(root), cwd=root, timeout=300)


COMMANDS = {
    "eval": lambda root, base, adapter: ["eval", "--model", str(base), "--tasks", "qa1", "--lengths", "0k",
                                         "--samples", "1", "--device", "cpu", "--out", str(root / "eval")],
    "eval-lm": lambda root, base, adapter: ["eval-lm", "--model", str(base), "--data", str(root / "book.txt"),
                                            "--segments", "2", "--samples", "1", "--segment-size", "16",
                                            "--device", "cpu", "--out", str(root / "eval-lm")],
    "generate": lambda root, base, adapter: ["generate", "--model", str(adapter), "--prompt", "the cat",
                                             "--max-new-tokens", "1", "--device", "cpu"],
    "merge": lambda root, base, adapter: ["merge", "--adapter", str(adapter), "--out", str(root / "merged")],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_checkpoint_code_never_runs(remote, command):
    root, checkpoint, adapter = remote
    result = _run(root, *COMMANDS[command](root, checkpoint.path, adapter))
    assert not checkpoint.code_ran(), f"{command} ran the checkpoint's code:\n{result.stderr[-2000:]}"
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "--trust-remote-code" in last, last
    assert "Traceback" not in result.stderr
    assert not any((root / name).exists() for name in ("eval", "eval-lm", "merged"))


def test_the_flag_runs_it_so_the_fixture_is_live(remote):
    root, checkpoint, adapter = remote
    result = _run(root, *COMMANDS["generate"](root, checkpoint.path, adapter), "--trust-remote-code")
    assert result.returncode == 0, result.stderr[-2000:]
    assert checkpoint.code_ran()
    checkpoint.marker.unlink()  # the other tests of this module expect it absent
