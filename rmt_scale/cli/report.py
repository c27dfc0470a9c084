"""`rmt-scale report`: a short markdown report of a training run and its evaluations."""

from __future__ import annotations

from pathlib import Path

from rmt_scale.cli.common import add_command, check_outputs_free


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "report", "write report.md: loss curves and accuracy vs length, with PNGs",
        "rmt-scale report --train runs/quickstart/train --eval runs/quickstart/eval_rmt \\\n"
        "    --baseline runs/quickstart/eval_full --out runs/quickstart",
    )
    parser.add_argument("--train", required=True, help="training output directory (has metrics.jsonl)")
    parser.add_argument("--eval", required=True, nargs="+", metavar="DIR",
                        help="`rmt-scale eval` output(s) of the memory model; several are merged cell by cell")
    parser.add_argument("--baseline", default=None, nargs="+", metavar="DIR",
                        help="`rmt-scale eval` output(s) of the full-attention baseline (default: none)")
    parser.add_argument("--out", default=None,
                        help="where report.md and its PNGs go (default: the folder holding --train)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report in --out")
    parser.set_defaults(func=_report)


def _report(args) -> int:
    from rmt_scale.evaluation.report import OUTPUT_FILES, write_run_report

    out = args.out if args.out is not None else Path(args.train).resolve().parent
    check_outputs_free(out, OUTPUT_FILES, args.overwrite)
    print(write_run_report(args.train, args.eval, args.baseline, out))
    return 0
