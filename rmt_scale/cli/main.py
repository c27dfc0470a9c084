"""`rmt-scale` command line: one subcommand per job, each registered by its own module.

Each module in COMMAND_MODULES has `register(subparsers)`, which adds its parser and sets
`func(args) -> int`. Heavy imports (torch, transformers) happen inside the commands, so `--help`
stays fast.

A user error (any `RMTScaleError`: a bad file, config, checkpoint or argument, and argparse's own
errors) prints one line, `error: <message>`, and exits 2 (`-v` shows its traceback); Ctrl-C exits 130. Everything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from rmt_scale import __version__
from rmt_scale.cli.common import ArgumentParser
from rmt_scale.errors import RMTScaleError, first_line

COMMAND_MODULES = (
    "rmt_scale.cli.models",
    "rmt_scale.cli.generation",
    "rmt_scale.cli.report",
    "rmt_scale.cli.evaluation",
    "rmt_scale.cli.export",
    "rmt_scale.cli.train",
    "rmt_scale.cli.serving",
)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="rmt-scale", description="Recurrent memory for Hugging Face decoder LLMs.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and the traceback of an error")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="[rmt-scale] %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except RMTScaleError as err:
        if args.verbose:
            raise
        print(f"error: {first_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
