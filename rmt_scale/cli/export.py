"""`rmt-scale export` and `rmt-scale merge`: take a trained model out of a run."""

from __future__ import annotations

from rmt_scale.cli.common import add_command, add_trust_remote_code


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "export",
        "write a PEFT adapter + memory from a DeepSpeed training checkpoint (any ZeRO stage)",
        "rmt-scale export --checkpoint runs/smollm2 --out adapters/smollm2 \\\n"
        "    --eval-results runs/smollm2/eval/results.json",
    )
    parser.add_argument("--checkpoint", required=True,
                        help="run directory (its newest complete checkpoint) or RUN_DIR/checkpoints/checkpoint-N")
    parser.add_argument("--out", required=True, help="adapter directory to write")
    parser.add_argument("--base", default=None,
                        help="base checkpoint directory (default: the one the training config names)")
    parser.add_argument("--eval-results", default=None, nargs="+", metavar="FILE",
                        help="results.json of `rmt-scale eval` for the model card; several (one model at other "
                             "lengths) are merged into one table (default: RUN_DIR/eval/results.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--no-tokenizer", action="store_true",
                        help="leave the tokenizer out: the adapter then loads its base's (a smaller adapter to ship)")
    add_trust_remote_code(parser)
    parser.set_defaults(func=_export)

    parser = add_command(
        subparsers, "merge", "fold the LoRA adapter into the base weights; the memory stays beside them",
        "rmt-scale merge --adapter adapters/smollm2 --out merged/smollm2 --dtype bfloat16",
    )
    parser.add_argument("--adapter", required=True, help="adapter directory (from `rmt-scale export`)")
    parser.add_argument("--out", required=True, help="merged model directory to write")
    parser.add_argument("--base", default=None, help="base checkpoint (default: the recorded path)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="dtype of the merged weights (auto: the base checkpoint's)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_trust_remote_code(parser)
    parser.set_defaults(func=_merge)


def _check_out(out: str, overwrite: bool, inputs) -> None:
    """Checked before anything is loaded: --out is replaced whole, so it must hold no input and,
    without --overwrite, nothing at all."""
    from rmt_scale.model.outputs import refuse_to_replace

    refuse_to_replace(out, overwrite, inputs=inputs)


def _export(args) -> int:
    from rmt_scale.export.adapter import export_checkpoint

    _check_out(args.out, args.overwrite, [args.checkpoint, args.base, *(args.eval_results or [])])
    checkpoint = export_checkpoint(args.checkpoint, args.out, base_path=args.base,
                                   eval_results=args.eval_results, trust_remote_code=args.trust_remote_code,
                                   include_tokenizer=not args.no_tokenizer)
    print(f"exported {checkpoint} -> {args.out}")
    return 0


def _merge(args) -> int:
    from rmt_scale.export.merge import merge_adapter

    _check_out(args.out, args.overwrite, [args.adapter, args.base])
    merge_adapter(args.adapter, args.out, base_path=args.base, dtype=args.dtype,
                  trust_remote_code=args.trust_remote_code)
    print(f"merged {args.adapter} -> {args.out}")
    return 0
