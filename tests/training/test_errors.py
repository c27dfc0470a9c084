"""Bad input stops a run with one line `error: ...`, exit status 2, and nothing a later
`resume=auto` could mistake for progress. In-process (fast) and, for the cases that involve
several ranks, under the deepspeed launcher with 2 ranks (none may hang)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from rmt_scale.resources import DEEPSPEED_DIR
from tests.training.helpers import REPO, TINY, deepspeed_cmd, keep_logging, run

spec = importlib.util.spec_from_file_location("train_script", REPO / "launch" / "train.py")
train_script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_script)


@pytest.fixture(autouse=True)
def _restore_logging():
    """main() sets up the package's logging; leave it as it was for the other tests."""
    yield from keep_logging()


def fails(capsys, argv) -> str:
    assert train_script.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("error: ")
    return err[-1]


def tiny(tmp_path, *overrides):
    return ["--config", str(TINY), f"output_dir={tmp_path / 'run'}", *overrides]


def nothing_written(tmp_path):
    run_dir = tmp_path / "run"
    return not (run_dir / "checkpoints").exists() and not (run_dir / "final").exists()


@pytest.mark.parametrize("overrides, message", [
    (["model.init=pretrained", "model.path=/nonexistent/model"], "model.path /nonexistent/model: no such directory"),
    (["resume=/nonexistent/checkpoint-000010"], "no such checkpoint directory"),
    (["curriculum.stages=[]"], "curriculum.stages is empty"),
    (["curriculum.stages.1.tokens=1000"], "exactly one of steps and tokens"),
    (["curriculum.stages.1.min_segments=3"], "min_segments must be in"),
    (["batch.global_batch_size=12"], "not a multiple"),
    (["deepspeed=/nonexistent/ds.json"], "deepspeed config /nonexistent/ds.json not found"),
    (["no_such_key=1"], "unknown config key(s) ['no_such_key']"),
])
def test_config_errors(tmp_path, capsys, overrides, message):
    line = fails(capsys, tiny(tmp_path, *overrides))
    assert message in line
    assert nothing_written(tmp_path)


def test_invalid_yaml_and_json(tmp_path, capsys):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: {init: random\nseed: 1\n")
    assert "invalid YAML" in fails(capsys, ["--config", str(bad_yaml)])
    assert "missing.yaml not found" in fails(capsys, ["--config", str(tmp_path / "missing.yaml")])
    bad_json = tmp_path / "ds.json"
    bad_json.write_text('{"train_batch_size": "auto",,}')
    assert "invalid JSON at line 1" in fails(capsys, tiny(tmp_path, f"deepspeed={bad_json}"))


def test_batch_size_forced_in_the_json_must_agree(tmp_path, capsys):
    ds = json.loads((DEEPSPEED_DIR / "zero2.json").read_text())
    ds["train_batch_size"] = 5
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(ds))
    line = fails(capsys, tiny(tmp_path, f"deepspeed={path}"))
    assert "train_batch_size=5 but the training config gives 16" in line and "set it to \"auto\"" in line


def test_resume_none_refuses_to_mix_runs(tmp_path, capsys):
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint-000004"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    (checkpoint / "complete").write_text("")
    assert "resume=none would mix" in fails(capsys, tiny(tmp_path, "resume=none"))


def tiny_tokenizer(path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[EOS]", "Mary", "went", "to", "the", "kitchen", "Where", "is", "?", "."]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                            eos_token="[EOS]").save_pretrained(path)


@pytest.mark.distributed
def test_empty_dataset_stops_every_rank(tmp_path):
    """The data is built on rank 0 first; its error reaches rank 1 too, which must not hang."""
    babi = tmp_path / "babi"
    babi.mkdir()
    (babi / "qa1_single-supporting-fact_train.txt").write_text("")
    (babi / "qa1_single-supporting-fact_valid.txt").write_text("")
    tiny_tokenizer(tmp_path / "tokenizer")
    overrides = [f"output_dir={tmp_path / 'run'}", "data.kind=babilong", f"data.babilong.babi_dir={babi}",
                 f"data.babilong.tokenizer={tmp_path / 'tokenizer'}", "logging.progress_bar=false"]
    code, output = run(deepspeed_cmd(2, TINY, overrides), cwd=tmp_path, timeout=180)
    assert code == 2, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].endswith("qa1_single-supporting-fact_train.txt:1: empty file, "
                                                   "no bAbI lines"), output[-3000:]
    assert nothing_written(tmp_path)


def test_a_finished_run_has_nothing_to_do(tmp_path, capsys):
    """The one-job-per-stage pattern submits one job too many at worst: it exits 0 at once."""
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint-000700"
    checkpoint.mkdir(parents=True)
    state = {"curriculum": {"stage": 2, "global_step": 700}, "world_size": 2, "zero_stage": 2}
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    (checkpoint / "complete").write_text("")
    assert train_script.main(tiny(tmp_path)) == 0
    assert "nothing to train" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoints"]


def test_ctrl_c_says_how_to_resume_and_bugs_keep_their_traceback(tmp_path, capsys, monkeypatch):
    from rmt_scale.training import loop

    def interrupted(plan):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train", interrupted)
    argv = ["--config", "tiny", f"output_dir={tmp_path / 'run'}", "resume=none", "seed=3"]
    assert train_script.main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"interrupted; resume with: rmt-scale train --config tiny output_dir={tmp_path / 'run'} "
                       "seed=3 (resume=auto)")

    def bug(plan):
        raise RuntimeError("a bug, not a user error")

    monkeypatch.setattr(loop, "train", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        train_script.main(argv)
