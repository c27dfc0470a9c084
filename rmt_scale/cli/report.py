"""`rmt-scale report`: a short markdown report of a training run and its evaluations."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("report", help="write report.md: training curve and accuracy vs length")
    parser.add_argument("--train", required=True, help="training output directory (has metrics.jsonl)")
    parser.add_argument("--eval", required=True, help="`rmt-scale eval` output of the memory model")
    parser.add_argument("--baseline", default=None, help="`rmt-scale eval` output of the full-attention baseline")
    parser.add_argument("--out", required=True, help="where report.md and the heatmap go")
    parser.set_defaults(func=_report)


def _report(args) -> int:
    from rmt_scale.evaluation.report import write_run_report

    print(write_run_report(args.train, args.eval, args.baseline, args.out))
    return 0
