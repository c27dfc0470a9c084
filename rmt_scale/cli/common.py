"""What every subcommand shares: help that shows defaults and an example, and the checks of
file and folder arguments made before anything heavy is loaded."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rmt_scale.errors import InputError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors in the form of every other error: a last line `error: ...`."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {self.prog}: {message}\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults appended to each option's help; the description and epilog keep their lines.

    No "(default: ...)" where it says nothing: required options, on/off flags, options whose
    default is None (not given), and help texts that already name their default in words
    ("default: the recorded path").
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required or action.nargs == 0 or action.default is None or "default" in text:
            return text
        return super()._get_help_string(action)


def add_command(subparsers, name: str, help: str, example: str, description: str | None = None
                ) -> argparse.ArgumentParser:
    """Add subcommand `name`; its --help ends with `example` (one or more command lines)."""
    lines = "\n".join(f"  {line}" for line in example.strip().splitlines())
    return subparsers.add_parser(name, help=help, description=description or help,
                                 epilog=f"example:\n{lines}", formatter_class=HelpFormatter)


def add_trust_remote_code(parser: argparse.ArgumentParser) -> None:
    """--trust-remote-code: the only way a command runs Python code shipped in a checkpoint."""
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run Python code shipped in the base checkpoint (an architecture transformers "
                             "does not know, named by auto_map in config.json); it runs with your rights, so "
                             "only for checkpoints you trust")


def check_files(paths, what: str) -> None:
    """Each of `paths` (None: none) is an existing file, or an InputError names the first that is not."""
    for path in paths or ():
        if not Path(path).is_file():
            raise InputError(f"{path}: no such {what} file")


def check_output_dir(path: str | Path) -> Path:
    """`--out` names a directory to write into: refused early when it is an existing file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {path} is a file; pass a directory")
    return path


def check_outputs_free(out: str | Path, names, overwrite: bool) -> None:
    """None of the files `names` that a command writes into the directory `out` exists yet, unless
    `overwrite`: earlier results are never replaced silently."""
    taken = [name for name in names if (Path(out) / name).exists()]
    if taken and not overwrite:
        raise InputError(f"{Path(out) / taken[0]} exists (an earlier run's results); pass --overwrite "
                         "to replace it, or choose another --out")
