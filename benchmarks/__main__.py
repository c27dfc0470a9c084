"""Run a benchmark and write its figures into docs/benchmarks.md (developer tooling, not shipped).

    python -m benchmarks NAME [--model DIR|random] ...      (from the repository root)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAMES = ("checkpointing", "long-input", "inference-scaling", "overhead", "training", "serving", "extrapolation",
         "memory-attention", "memory-pathway", "memory-writes")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description="run a benchmark, write figures to docs/benchmarks.md",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("name", choices=NAMES, help="which benchmark")
    parser.add_argument("--doc", default=None,
                        help="markdown file to update (default: docs/benchmarks.md; docs/results.md for memory-attention and memory-pathway)")
    parser.add_argument("--image-dir", default="docs/img", help="where plots go")
    parser.add_argument("--model", default=None,
                        help="local checkpoint to measure, or 'random' for a random Llama (inference-scaling, "
                             "overhead: default the fetched default checkpoint; training: default random)")
    parser.add_argument("--limit-s", type=float, default=600.0,
                        help="inference-scaling: stop full attention past this many seconds")
    parser.add_argument("--max-tokens", type=int, default=1 << 20, help="inference-scaling: longest input")
    parser.add_argument("--document-tokens", type=int, default=None,
                        help="serving: tokens of the document read (default 65536; 16384 for a random model)")
    parser.add_argument("--quick", action="store_true", help="extrapolation: a short smoke run of the pipeline")
    parser.add_argument("--only", nargs="+", default=None, metavar="RECIPE",
                        help="extrapolation: train only these recipes (by name) and keep the section until all are done; "
                             "memory-pathway: only these variants (lora, lora-constant, lora-2e-4, full, lora-soft-token)")
    parser.add_argument("--text", default=None,
                        help="memory-attention: a plain-text file to read a segment from (default: built-in filler)")
    parser.add_argument("--sink-token", type=int, default=0,
                        help="memory-attention: the token id tried as a sink (0 is SmolLM2's <|endoftext|>)")
    parser.add_argument("--results", default=None,
                        help="extrapolation, memory-pathway: finished runs, kept so a stopped benchmark resumes "
                             "(default: build/NAME.json)")
    parser.add_argument("--adapter", nargs="+", default=None,
                        help="memory-pathway: also measure how much these trained adapters' written memory depends on a qa1 fact; "
                             "memory-writes: the soft-token adapters to read")
    parser.add_argument("--labels", nargs="+", default=None,
                        help="memory-writes: a name for each --adapter in the table (default: its path)")
    parser.add_argument("--segments", type=int, default=2,
                        help="memory-writes: segments per sample (the memory written before the last is read)")
    parser.add_argument("--samples", type=int, default=64, help="memory-writes: held-out samples")
    parser.add_argument("--steps", type=int, default=100, help="memory-pathway: training steps of each variant")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from benchmarks import core, scaling

    default_doc = "docs/results.md" if args.name.startswith("memory-") else "docs/benchmarks.md"
    results = Path(args.results or f"build/{args.name.replace('-', '_')}.json")
    doc, images = Path(args.doc or default_doc), Path(args.image_dir)
    if args.name == "checkpointing":
        core.checkpointing(doc, images)
    elif args.name == "long-input":
        core.long_input(doc, images)
    elif args.name == "inference-scaling":
        scaling.inference_scaling(doc, images, args.model, args.limit_s, args.max_tokens)
    elif args.name == "overhead":
        scaling.overhead(doc, images, args.model)
    elif args.name == "serving":
        from benchmarks import serving

        serving.serving(doc, args.model, args.document_tokens)
    elif args.name == "memory-attention":
        from benchmarks import memory_attention

        if args.model is None:
            print("error: memory-attention needs --model (an adapter or a base checkpoint)", file=sys.stderr)
            return 2
        memory_attention.memory_attention(doc, args.model, args.text, args.sink_token)
    elif args.name == "memory-pathway":
        from benchmarks import memory_pathway

        memory_pathway.memory_pathway(doc, images, args.model or "SmolLM2-135M-Instruct", args.steps, results,
                                      args.adapter, args.only)
    elif args.name == "memory-writes":
        from benchmarks import memory_writes

        memory_writes.memory_writes(doc, args.adapter or [], args.labels, args.segments, args.samples)
    elif args.name == "extrapolation":
        from benchmarks import extrapolation

        rows = extrapolation.extrapolation(doc, images, results, args.quick, args.only)
        if rows is None or args.quick:
            return 0  # recipes still to run, or a smoke test: the recorded section stays
    else:
        scaling.training(doc, images, args.model)
    print(f"updated {doc}")
    return 0


if __name__ == "__main__":
    from rmt_scale.errors import RMTScaleError, first_line

    try:
        sys.exit(main())
    except RMTScaleError as err:  # a model or data path the benchmark cannot use: one line, no traceback
        print(f"error: {first_line(err)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        # Finished runs are already in the results file (written atomically); the doc is untouched.
        print("interrupted; run the same command again to resume from the recorded runs", file=sys.stderr)
        sys.exit(130)
