"""Run a benchmark and write its figures into docs/benchmarks.md (developer tooling, not shipped).

    python -m benchmarks NAME [--model DIR|random] ...      (from the repository root)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAMES = ("checkpointing", "long-input", "inference-scaling", "overhead", "training")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description="run a benchmark, write figures to docs/benchmarks.md",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("name", choices=NAMES, help="which benchmark")
    parser.add_argument("--doc", default="docs/benchmarks.md", help="markdown file to update")
    parser.add_argument("--image-dir", default="docs/img", help="where plots go")
    parser.add_argument("--model", default=None,
                        help="local checkpoint to measure, or 'random' for a random Llama (inference-scaling, "
                             "overhead: default the fetched default checkpoint; training: default random)")
    parser.add_argument("--limit-s", type=float, default=600.0,
                        help="inference-scaling: stop full attention past this many seconds")
    parser.add_argument("--max-tokens", type=int, default=1 << 20, help="inference-scaling: longest input")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from benchmarks import core, scaling

    doc, images = Path(args.doc), Path(args.image_dir)
    if args.name == "checkpointing":
        core.checkpointing(doc, images)
    elif args.name == "long-input":
        core.long_input(doc, images)
    elif args.name == "inference-scaling":
        scaling.inference_scaling(doc, images, args.model, args.limit_s, args.max_tokens)
    elif args.name == "overhead":
        scaling.overhead(doc, images, args.model)
    else:
        scaling.training(doc, images, args.model)
    print(f"updated {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
