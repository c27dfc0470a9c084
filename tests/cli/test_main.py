"""The command line's contract: one-line user errors (exit 2), bugs keep their traceback, Ctrl-C
exits 130, --version, and every subcommand's --help shows its defaults and an example."""

from __future__ import annotations

import argparse
import traceback

import pytest

import rmt_scale
from rmt_scale.cli import report
from rmt_scale.cli.main import build_parser, main
from rmt_scale.errors import AdapterError, InputError


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"rmt-scale {rmt_scale.__version__}"


def test_every_subcommand_help_shows_defaults_and_an_example():
    commands = subcommands()
    assert {"generate", "eval", "eval-lm", "report", "export", "merge", "import-gguf",
            "fetch-default"} <= set(commands)
    for name, parser in commands.items():
        text = parser.format_help()
        assert "example:\n  rmt-scale " in text, f"`rmt-scale {name} --help` has no example"
        # A command of positional arguments only (`configs ls`) has no defaults to show.
        if any(action.option_strings and action.nargs != 0 for action in parser._actions):
            assert "(default:" in text, f"`rmt-scale {name} --help` shows no default"


def _raise(error: BaseException):
    def command(args):
        raise error
    return command


@pytest.mark.parametrize("bug", [RuntimeError("a bug"), ValueError("a bug"), KeyError("a bug")])
def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path, bug):
    monkeypatch.setattr(report, "_report", _raise(bug))
    with pytest.raises(type(bug)) as caught:
        main(["report", "--train", str(tmp_path), "--eval", str(tmp_path)])
    # The traceback reaches into the command itself: nothing swallowed it on the way out.
    assert any(frame.name == "command" for frame in traceback.extract_tb(caught.tb))


@pytest.mark.parametrize("error", [InputError("--out x exists; pass --overwrite"),
                                   AdapterError("x: memory file missing\nsecond line")])
def test_user_errors_are_one_line_and_exit_2(monkeypatch, tmp_path, capsys, error):
    monkeypatch.setattr(report, "_report", _raise(error))
    assert main(["report", "--train", str(tmp_path), "--eval", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {str(error).splitlines()[0]}\n" and captured.out == ""
    # -v: the same error with its traceback.
    with pytest.raises(type(error)):
        main(["-v", "report", "--train", str(tmp_path), "--eval", str(tmp_path)])


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(report, "_report", _raise(KeyboardInterrupt()))
    assert main(["report", "--train", str(tmp_path), "--eval", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "interrupted\n"
