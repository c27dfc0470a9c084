"""Malformed GGUF files and training checkpoints (for export), and outputs that would destroy
an input."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.bad_inputs.harness import MODEL_STATES, OPTIM_STATES, Case, Shared
from tests.export.gguf_files import tiny_llama_and_tokenizer, write_llama_gguf, write_t5_gguf
from tests.security_fixtures import write_crafted_pickle

MARKER = "code-ran"


def _gguf(name: str, write, expect: str, *extra: str, out: str = "out") -> Case:
    """`import-gguf FILE OUT`, FILE written by `write(case_dir, shared) -> path`."""
    def make(case_dir: Path, shared: Shared) -> list[str]:
        return ["import-gguf", str(write(case_dir, shared)), out, *extra]
    return Case(name, make, expect)


def _copy_gguf(case_dir: Path, shared: Shared) -> Path:
    return Path(shutil.copyfile(shared.gguf, case_dir / "model.gguf"))


def _bytes(data: bytes):
    def write(case_dir: Path, shared: Shared) -> Path:
        (case_dir / "model.gguf").write_bytes(data(shared) if callable(data) else data)
        return case_dir / "model.gguf"
    return write


def _damaged(**damage):
    def write(case_dir: Path, shared: Shared) -> Path:
        return write_llama_gguf(case_dir / "model.gguf", *tiny_llama_and_tokenizer(), **damage)
    return write


def _with_user_files(case_dir: Path, shared: Shared) -> Path:
    (case_dir / "out").mkdir()
    (case_dir / "out" / "notes.txt").write_text("the user's own file")
    return _copy_gguf(case_dir, shared)


def _fetch_into_user_dir(case_dir: Path, shared: Shared) -> list[str]:
    (case_dir / "models").mkdir()
    (case_dir / "models" / "notes.txt").write_text("the user's own file")
    # Refused before any download (the tests have no network: a download would fail differently).
    return ["fetch-default", "--out", "models"]


GGUF_CASES = [
    Case("gguf-missing", lambda case_dir, shared: ["import-gguf", "nothere.gguf", "out"], r"nothere.gguf: no such GGUF"),
    _gguf("gguf-not-a-gguf", _bytes(b"PK\x03\x04" + bytes(200)), r"not a GGUF file"),
    _gguf("gguf-truncated", _bytes(lambda shared: shared.gguf.read_bytes()[:-100]), r"truncated"),
    _gguf("gguf-missing-tensors", _damaged(drop=["blk.0.attn_q.weight", "blk.0.ffn_up.weight",
                                                 "blk.1.attn_k.weight"]),
          r"3 weight\(s\) of the llama architecture are not in the file"),
    _gguf("gguf-wrong-shape", _damaged(reshape=["blk.0.attn_v.weight"]), r"v_proj.weight has shape"),
    _gguf("gguf-t5", lambda case_dir, shared: write_t5_gguf(case_dir / "model.gguf"),
          r"a t5 GGUF is not a decoder-only causal language model"),
    _gguf("gguf-merges-one-part", _damaged(merges=["abc", "d e"]), r"tokenizer stored in this GGUF does not load"),
    _gguf("gguf-merges-unknown-tokens", _damaged(merges=["zz qq"]), r"tokenizer .* out of vocabulary"),
    _gguf("gguf-into-its-own-folder", _copy_gguf, r"\. holds the input .*model.gguf", "--overwrite", out="."),
    _gguf("gguf-out-has-user-files", _with_user_files, r"out exists and is not empty; pass --overwrite"),
    Case("fetch-default-out-has-user-files", _fetch_into_user_dir, r"models exists and is not empty"),
]


# --- training checkpoints, for `rmt-scale export` ---------------------------------------------


def _export(name: str, damage, expect: str, *extra: str, marker: str | None = None,
            out: str = "adapter") -> Case:
    """`export --checkpoint run --out OUT` after `damage(run_dir, case_dir)`."""
    def make(case_dir: Path, shared: Shared) -> list[str]:
        run = Path(shutil.copytree(shared.run, case_dir / "run"))
        damage(run, case_dir)
        return ["export", "--checkpoint", "run", "--out", out, *extra]
    return Case(name, make, expect, marker=marker)


def _truncate(run: Path, case_dir: Path) -> None:
    data = (run / MODEL_STATES).read_bytes()
    (run / MODEL_STATES).write_bytes(data[: len(data) // 2])


def _crafted_model_states(run: Path, case_dir: Path) -> None:
    write_crafted_pickle(run / MODEL_STATES, case_dir / MARKER, module={}, param_shapes=[])


def _crafted_optimizer_states(run: Path, case_dir: Path) -> None:
    write_crafted_pickle(run / OPTIM_STATES, case_dir / MARKER, optimizer_state_dict={})


CHECKPOINT_CASES = [
    _export("checkpoint-truncated-model-states", _truncate, r"mp_rank_00_model_states.pt: unreadable, truncated"),
    _export("checkpoint-crafted-model-states", _crafted_model_states, r"model_states.pt: .*unsafe",
            marker=MARKER),
    _export("checkpoint-missing-optimizer-files", lambda run, case_dir: None, r"without \*_optim_states.pt"),
    _export("checkpoint-crafted-optimizer-states", _crafted_optimizer_states, r"optim_states.pt: .*unsafe",
            marker=MARKER),
    _export("checkpoint-out-holds-it", lambda run, case_dir: None, r"holds the input run", "--overwrite",
            out="."),
]

CASES = GGUF_CASES + CHECKPOINT_CASES
