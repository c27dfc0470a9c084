"""What every subcommand's parser shares: help that shows defaults and an example."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults appended to each option's help; the description and epilog keep their lines."""


def add_command(subparsers, name: str, help: str, example: str, description: str | None = None
                ) -> argparse.ArgumentParser:
    """Add subcommand `name`; its --help ends with `example` (one or more command lines)."""
    lines = "\n".join(f"  {line}" for line in example.strip().splitlines())
    return subparsers.add_parser(name, help=help, description=description or help,
                                 epilog=f"example:\n{lines}", formatter_class=HelpFormatter)
