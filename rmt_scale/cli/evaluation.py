"""`rmt-scale eval` (BABILong accuracy over tasks x lengths) and `rmt-scale eval-lm` (per-segment loss)."""

from __future__ import annotations

from pathlib import Path

from rmt_scale.cli.common import add_command, check_files, check_output_dir
from rmt_scale.errors import InputError


def _model_arguments(parser, memory_help: str) -> None:
    parser.add_argument("--model", required=True,
                        help="saved memory model / exported adapter directory, or a base checkpoint")
    parser.add_argument("--base", default=None,
                        help="base checkpoint of a memory model (default: the path it records)")
    parser.add_argument("--num-mem-tokens", type=int, default=None, help=memory_help)
    parser.add_argument("--segment-size", type=int, default=None,
                        help="tokens per segment (default: the saved one; 512 for fresh memory)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="weights dtype (default: the checkpoint's; bfloat16 is ~3x faster on CPUs with AMX)")
    parser.add_argument("--batch-size", type=int, default=1, help="samples per forward / generate call")
    parser.add_argument("--cache-dir", default=None, help="datasets cache (default: the HF datasets cache)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "eval", "BABILong accuracy over tasks x lengths: results.json, results.csv, heatmap PNG",
        "rmt-scale eval --model runs/qa1/export --tasks qa1,qa2 --lengths 0k,4k,64k,1M --samples 50 --out runs/eval",
    )
    _model_arguments(parser, "base checkpoint only: wrap it with this much fresh (untrained) memory "
                             "instead of running it as the full-attention baseline")
    parser.add_argument("--tasks", default="qa1", help="comma-separated bAbI tasks")
    parser.add_argument("--lengths", default="0k,1k,4k",
                        help="comma-separated prompt lengths: 0k, 1k, 4k, 16k, 128k, 1M or token counts")
    parser.add_argument("--samples", type=int, default=25, help="samples per task and length")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--split", default="test", choices=["test", "validation"],
                        help="held-out bAbI data to build samples from")
    parser.add_argument("--babi-dir", default=None,
                        help="directory of bAbI files qa{N}_*_{train,test}.txt (default: built-in qa1-qa3 generator)")
    parser.add_argument("--noise", nargs="+", default=None, metavar="BOOK",
                        help="plain-text books for noise (default: built-in filler sentences)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="tokens generated per answer")
    parser.add_argument("--seed", type=int, default=0, help="seed of samples and noise")
    parser.set_defaults(func=_eval)

    parser = add_command(
        subparsers, "eval-lm", "loss and perplexity per segment position, with and without memory",
        "rmt-scale eval-lm --model runs/qa1/export --data book1.txt book2.txt --segments 16 --out runs/eval-lm",
    )
    _model_arguments(parser, "memory for a base checkpoint (default: 16 fresh, untrained slots)")
    parser.add_argument("--data", nargs="+", required=True, metavar="FILE", help="UTF-8 text files")
    parser.add_argument("--segments", type=int, default=16, help="segments per sample")
    parser.add_argument("--samples", type=int, default=8, help="samples to read (the first ones)")
    parser.add_argument("--out", default="eval-lm", help="output directory")
    parser.set_defaults(func=_eval_lm)


def _at_least_one(args, *names: str) -> None:
    low = [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) < 1]
    if low:
        raise InputError(f"{', '.join(low)} must be >= 1")


def _write_report(report, model, out: str, heading: str) -> int:
    paths = report.write(check_output_dir(out), title=model.label())
    print(f"{heading}, {model.label()}")
    print(report.table())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def _eval(args) -> int:
    from rmt_scale.evaluation import evaluate_babilong, load_eval_model, parse_lengths, parse_tasks

    # Everything cheap is checked before the model is loaded.
    if args.babi_dir is not None and not Path(args.babi_dir).is_dir():
        raise InputError(f"{args.babi_dir}: no such bAbI directory")
    tasks = parse_tasks(args.tasks, args.babi_dir)
    lengths = parse_lengths(args.lengths)
    check_files(args.noise, "noise")
    _at_least_one(args, "samples", "batch_size", "max_new_tokens")
    check_output_dir(args.out)
    model = load_eval_model(args.model, base=args.base, num_mem_tokens=args.num_mem_tokens,
                            segment_size=args.segment_size, device=args.device, dtype=args.dtype)
    report = evaluate_babilong(
        model, tasks, lengths, args.samples, seed=args.seed, split=args.split,
        babi_dir=args.babi_dir, noise_files=args.noise, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, cache_dir=args.cache_dir, progress=not args.no_progress,
    )
    return _write_report(report, model, args.out, "BABILong accuracy (%)")


def _eval_lm(args) -> int:
    from rmt_scale.config import RMTConfig
    from rmt_scale.evaluation import evaluate_segments, load_eval_model
    from rmt_scale.model.saving import RMT_CONFIG_FILE

    check_files(args.data, "text")
    _at_least_one(args, "segments", "samples", "batch_size")
    check_output_dir(args.out)
    num_mem_tokens = args.num_mem_tokens
    if num_mem_tokens is None and not (Path(args.model) / RMT_CONFIG_FILE).is_file():
        num_mem_tokens = RMTConfig().num_mem_tokens  # a base checkpoint: fresh memory
    model = load_eval_model(args.model, base=args.base, num_mem_tokens=num_mem_tokens,
                            segment_size=args.segment_size, device=args.device, dtype=args.dtype)
    report = evaluate_segments(model, args.data, args.segments, args.samples, args.batch_size,
                               cache_dir=args.cache_dir, progress=not args.no_progress)
    return _write_report(report, model, args.out, "Loss per segment position")
