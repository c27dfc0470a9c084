"""Files an attacker could hand a user, for the tests that prove rmt-scale never runs their code.

* `write_remote_code_checkpoint`: a tiny Llama checkpoint whose config.json names an architecture
  transformers does not know and maps it (`auto_map`) to a Python module in the directory. That
  module writes a marker file when imported, so "the checkpoint's code never ran" is checkable:
  the marker does not exist. Loading it with `trust_remote_code=True` does run it (see
  tests/test_remote_code.py), so the fixture is live, not a file that could never fire.
* `write_crafted_pickle`: a torch file (what DeepSpeed checkpoints are made of) whose unpickling
  writes a marker file. `torch.load(weights_only=False)` runs it; a safe reader must refuse it.

Every command is run the way an attacker would want: `attack_env` answers "y" to transformers'
"run the custom code? [y/N]" prompt, so a load that leaves `trust_remote_code` unset runs the code.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

REMOTE_MODULE = "remote_modeling"
REMOTE_MODEL_TYPE = "rmt_scale_remote"
# Enough answers for every prompt transformers might show (config, model, tokenizer).
YES_TO_EVERY_PROMPT = "y\n" * 32

_MODULE_SOURCE = '''"""Checkpoint code: importing it is what an attacker wants a loader to do."""
from pathlib import Path

Path({marker!r}).write_text("checkpoint code ran\\n")

from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402


class RemoteLlamaConfig(LlamaConfig):
    model_type = {model_type!r}


class RemoteLlamaForCausalLM(LlamaForCausalLM):
    config_class = RemoteLlamaConfig


class RemoteTokenizer(PreTrainedTokenizerFast):
    pass
'''


@dataclass(frozen=True)
class RemoteCodeCheckpoint:
    """A base checkpoint directory with code of its own.

    Attributes:
        path: The checkpoint directory (config.json, model.safetensors, tokenizer, the module).
        marker: Written when, and only when, the checkpoint's module is imported.
    """

    path: Path
    marker: Path

    def code_ran(self) -> bool:
        return self.marker.exists()


def write_remote_code_checkpoint(root: Path, name: str = "remote-code-base") -> RemoteCodeCheckpoint:
    """Write the checkpoint under `root / name`; the marker goes to `root / (name + ".ran")`."""
    from tests.bpe import byte_level_bpe
    from tests.tiny_models import tiny_causal_lm

    path, marker = root / name, root / f"{name}.ran"
    tokenizer = byte_level_bpe(["the cat sat on the mat", "Question: where? Answer: here"] * 10, 300,
                               pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    model = tiny_causal_lm("llama", vocab_size=len(tokenizer))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / f"{REMOTE_MODULE}.py").write_text(
        _MODULE_SOURCE.format(marker=str(marker), model_type=REMOTE_MODEL_TYPE))
    config = json.loads((path / "config.json").read_text())
    config.update(model_type=REMOTE_MODEL_TYPE, architectures=["RemoteLlamaForCausalLM"], auto_map={
        "AutoConfig": f"{REMOTE_MODULE}.RemoteLlamaConfig",
        "AutoModelForCausalLM": f"{REMOTE_MODULE}.RemoteLlamaForCausalLM",
    })
    (path / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer_config = json.loads((path / "tokenizer_config.json").read_text())
    tokenizer_config["auto_map"] = {"AutoTokenizer": [None, f"{REMOTE_MODULE}.RemoteTokenizer"]}
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    return RemoteCodeCheckpoint(path, marker)


class _WritesMarker:
    """Unpickles into a call of `open(marker, "w")`: harmless, and visible."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_crafted_pickle(path: Path, marker: Path, **entries) -> Path:
    """A torch file (zip + pickle, as `torch.save` writes it) holding `entries` and one object
    whose unpickling writes `marker`: shaped like a DeepSpeed state file, with a payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**entries, "payload": _WritesMarker(marker)}, path)
    return path


def attack_env(root: Path) -> dict[str, str]:
    """The environment of a command under test: offline, its caches under `root`, and the
    checkpoint code's module cache there too (where transformers would copy and import it)."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_HOME=str(root / "hf-home"), HF_MODULES_CACHE=str(root / "hf-modules"),
               RMT_SCALE_HOME=str(root / "rmt-scale-home"), OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore", MPLBACKEND="Agg",
               # Tests import from the repository root; commands run from elsewhere.
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                           env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return env


def cli_command(*args: str) -> list[str]:
    """`rmt-scale ARGS` as a subprocess command line of this interpreter."""
    return [sys.executable, "-m", "rmt_scale.cli.main", *args]
