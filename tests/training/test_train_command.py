"""`rmt-scale train` (the launcher command it starts, --dry-run) and `rmt-scale configs ls|cp`."""

from __future__ import annotations

import argparse
import subprocess

import pytest

from rmt_scale.cli import train as train_command
from rmt_scale.cli.main import main
from rmt_scale.errors import InputError
from rmt_scale.resources import DEEPSPEED_DIR, RECIPES_DIR
from rmt_scale.training import build


class FakeLauncher:
    """Stands in for subprocess.Popen: records the command, exits with `code`."""

    calls: list = []
    options: list = []
    code = 0

    def __init__(self, command, env=None, **options):
        FakeLauncher.calls.append((command, env))
        FakeLauncher.options.append(options)

    def wait(self):
        return FakeLauncher.code


@pytest.fixture
def launcher(monkeypatch):
    FakeLauncher.calls, FakeLauncher.options, FakeLauncher.code = [], [], 0
    monkeypatch.setattr(subprocess, "Popen", FakeLauncher)
    monkeypatch.setattr(train_command, "local_gpus", lambda: 0)
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    return FakeLauncher


def test_train_starts_the_deepspeed_launcher_on_the_worker_module(launcher, tmp_path):
    assert main(["train", "--config", "tiny", "--num-gpus", "3", "--master-port", "29555", "seed=1",
                 f"output_dir={tmp_path}"]) == 0
    (command, env), = launcher.calls
    assert command[1:] == ["-m", "deepspeed.launcher.runner", "--num_gpus", "3", "--master_port", "29555",
                           "--module", "rmt_scale.cli.train_worker", "--config", "tiny", "seed=1",
                           f"output_dir={tmp_path}"]
    assert env["DS_ACCELERATOR"] == "cpu"  # no GPU here
    # Ctrl-C reaches `rmt-scale train` alone (the launcher has a process group of its own), which
    # stops the ranks and prints the one "interrupted" line itself: the ranks are told to stay quiet.
    assert launcher.options[-1] == {"start_new_session": True} and env["RMT_SCALE_PARENT_REPORTS_INTERRUPT"] == "1"
    launcher.code = 7
    assert main(["train", "--config", "tiny"]) == 7  # the launcher's exit status
    assert launcher.calls[-1][0][3:5] == ["--num_gpus", str(train_command.CPU_RANKS)]
    # A port of its own, not DeepSpeed's fixed 29500: a second launch on this machine must reach
    # its own rendezvous (and then the run-directory lock), not join the first one's.
    assert launcher.calls[-1][0][5] == "--master_port" and int(launcher.calls[-1][0][6]) > 0


def test_train_with_a_hostfile_uses_its_slots(launcher, tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# two nodes\nnode-a slots=4\nnode-b slots=4  # the second\n")
    assert main(["train", "--config", "tiny", "--hostfile", str(hostfile)]) == 0
    command = launcher.calls[-1][0]
    assert "--num_gpus" not in command and command[command.index("--hostfile") + 1] == str(hostfile)
    assert launcher.options[-1] == {"start_new_session": False}  # the runner relays Ctrl-C to the nodes
    assert "--master_port" not in command  # every node must use the same one: DeepSpeed's default
    namespace = argparse.Namespace(num_gpus=None, hostfile=str(hostfile))
    assert train_command.world_size(namespace) == 8
    namespace.num_gpus = 2
    assert train_command.world_size(namespace) == 4
    hostfile.write_text("node-a\n")
    with pytest.raises(InputError, match="expected `HOST slots=N`"):
        train_command.world_size(namespace)


def test_a_bad_config_fails_before_anything_starts(launcher, capsys):
    assert main(["train", "--config", "tiny", "no_such_key=1"]) == 2
    assert "unknown config key(s) ['no_such_key']" in capsys.readouterr().err
    assert launcher.calls == []


def test_dry_run_prints_the_plan_and_starts_nothing(launcher, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(build, "load_base", lambda *a, **k: pytest.fail("--dry-run loaded weights"))
    monkeypatch.setattr(build, "random_base", lambda *a, **k: pytest.fail("--dry-run built a model"))
    run = tmp_path / "run"
    assert main(["train", "--config", "tiny", "--dry-run", "--num-gpus", "2", f"output_dir={run}",
                 "checkpoint.every_steps=25"]) == 0
    text = capsys.readouterr().out
    assert launcher.calls == [] and not run.exists()
    assert f"config:      {RECIPES_DIR / 'tiny.yaml'}" in text
    assert "ranks:       2" in text and "8 per rank x 1 accumulation x 2 ranks = 16 samples per step" in text
    assert f"deepspeed:   {DEEPSPEED_DIR / 'zero2.json'}, filled:" in text
    for field in ('"train_batch_size": 16', '"train_micro_batch_size_per_gpu": 8',
                  '"gradient_accumulation_steps": 1', '"reduce_bucket_size": 4096'):
        assert field in text
    # The tiny recipe: 150 steps of 1 segment, then up to 400 steps of 1-2 segments (16 tokens each).
    rows = [line.split() for line in text.splitlines() if line.strip().startswith(("1 ", "2 "))]
    assert rows == [["1", "1", "150", "38,400", "this", "launch"],
                    ["2", "1-2", "~400", "~153,600", "this", "launch", "(may", "end", "early:", "accuracy", ">=",
                     "0.95)"]]
    for line in (f"metrics         {run / 'metrics.jsonl'}", f"tensorboard     {run / 'tensorboard'}",
                 f"checkpoints     {run / 'checkpoints'} (every 25 steps", f"final adapter   {run / 'final'}"):
        assert line in text


def test_configs_ls_lists_recipes_and_ds_configs(capsys):
    assert main(["configs", "ls"]) == 0
    text = capsys.readouterr().out
    assert "  tiny " in text and "key recall" in text
    assert "  zero3_offload " in text and "ZeRO stage 3, optimizer and parameters offloaded to CPU" in text


def test_configs_cp_copies_and_never_overwrites(tmp_path, capsys):
    assert main(["configs", "cp", "tiny", str(tmp_path / "mine.yaml")]) == 0
    assert (tmp_path / "mine.yaml").read_text() == (RECIPES_DIR / "tiny.yaml").read_text()
    assert main(["configs", "cp", "zero3.json", str(tmp_path)]) == 0  # into a directory
    assert (tmp_path / "zero3.json").read_text() == (DEEPSPEED_DIR / "zero3.json").read_text()
    (tmp_path / "mine.yaml").write_text("edited\n")
    assert main(["configs", "cp", "tiny", str(tmp_path / "mine.yaml")]) == 2
    assert "mine.yaml exists" in capsys.readouterr().err
    assert (tmp_path / "mine.yaml").read_text() == "edited\n"
    assert main(["configs", "cp", "nope", str(tmp_path / "x.yaml")]) == 2
    assert "no shipped recipe or DeepSpeed JSON named 'nope'" in capsys.readouterr().err
