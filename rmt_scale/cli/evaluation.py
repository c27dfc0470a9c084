"""`rmt-scale eval` (BABILong accuracy over tasks x lengths, or accuracy on your own QA data with
--data) and `rmt-scale eval-lm` (per-segment loss)."""

from __future__ import annotations

from pathlib import Path

from rmt_scale.cli.common import (
    add_command,
    add_trust_remote_code,
    check_files,
    check_output_dir,
    check_outputs_free,
)
from rmt_scale.errors import DataError, InputError


def _model_arguments(parser, memory_help: str) -> None:
    parser.add_argument("--model", required=True,
                        help="saved memory model / exported adapter directory, or a base checkpoint "
                             "(a directory, or a model id in the local Hugging Face cache)")
    parser.add_argument("--base", default=None,
                        help="base checkpoint of a memory model, a directory or a cached model id "
                             "(default: the one it records)")
    parser.add_argument("--num-mem-tokens", type=int, default=None, help=memory_help)
    parser.add_argument("--segment-size", type=int, default=None,
                        help="tokens per segment (default: the saved one; 512 for fresh memory)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="weights dtype (default: the checkpoint's; bfloat16 is ~3x faster on CPUs with AMX)")
    parser.add_argument("--batch-size", type=int, default=1, help="samples per forward / generate call")
    parser.add_argument("--cache-dir", default=None, help="datasets cache (default: the HF datasets cache)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    add_trust_remote_code(parser)


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "eval", "BABILong accuracy over tasks x lengths: results.json, results.csv, heatmap PNG",
        "rmt-scale eval --model runs/qa1/export --tasks qa1,qa2 --lengths 0k,4k,64k,1M --samples 50 --out runs/eval\n"
        "rmt-scale eval --model runs/mine/final --data examples/data/qa.jsonl --template plain --out runs/eval-mine\n"
        "rmt-scale eval --model runs/qa1/export --data ~/babilong-1k-samples --tasks qa1 --out runs/eval-official",
    )
    _model_arguments(parser, "base checkpoint only: wrap it with this much fresh (untrained) memory "
                             "instead of running it as the full-attention baseline")
    parser.add_argument("--tasks", default=None,
                        help="comma-separated bAbI tasks (default: qa1; with --data in the official "
                             "BABILong layout, every task it has)")
    parser.add_argument("--lengths", default=None,
                        help="comma-separated prompt lengths: 0k, 1k, 4k, 16k, 128k, 1M or token counts "
                             "(default: 0k,1k,4k; with --data in the official layout, every length it has)")
    parser.add_argument("--samples", type=int, default=25,
                        help="samples per task and length (with --data: per length bucket)")
    parser.add_argument("--data", default=None, metavar="SOURCE",
                        help="score your own QA rows instead of generated BABILong: a .jsonl/.json/.parquet "
                             "file, a directory, a glob or a cached dataset name; or the official BABILong "
                             "data (a directory in its layout, or RMT-team/babilong*), read with the "
                             "official prompt and scorer")
    parser.add_argument("--template", default=None,
                        help="with --data: babilong, plain, chat or a pattern with {question} "
                             "(default: plain; babilong for the official layout)")
    parser.add_argument("--fields", default=None, metavar="KEY=NAME,...",
                        help="with --data: your field names, e.g. context=document,answer=target "
                             "(keys: context, question, answer, messages, task)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--split", default="test", choices=["test", "validation"],
                        help="held-out bAbI data to build samples from")
    parser.add_argument("--babi-dir", default=None,
                        help="directory of bAbI files qa{N}_*_{train,test}.txt (default: built-in qa1-qa3 generator)")
    parser.add_argument("--noise", nargs="+", default=None, metavar="BOOK",
                        help="plain-text books for noise (default: built-in filler sentences)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="tokens generated per answer")
    parser.add_argument("--seed", type=int, default=0, help="seed of samples and noise")
    parser.add_argument("--no-carry", action="store_true",
                        help="control run of a memory model: answer from the last segment with the initial "
                             "memory, as if nothing before it had been written; a model that scores the same "
                             "with and without this flag does not use its memory")
    parser.set_defaults(func=_eval)

    parser = add_command(
        subparsers, "eval-lm", "loss and perplexity per segment position, with and without memory",
        "rmt-scale eval-lm --model runs/qa1/export --data book1.txt book2.txt --segments 16 --out runs/eval-lm",
    )
    _model_arguments(parser, "memory for a base checkpoint (default: 16 fresh, untrained slots)")
    parser.add_argument("--data", nargs="+", required=True, metavar="SOURCE",
                        help="documents, as data.text.sources: .txt/.md files, .jsonl/.json/.parquet "
                             "(one document per row), directories, globs or cached dataset names")
    parser.add_argument("--field", default="text", help="the text field of .jsonl/.json/.parquet rows")
    parser.add_argument("--short-documents", default="skip", choices=["skip", "pack"],
                        help="documents shorter than a sample: skip them, or pack them with EOS between")
    parser.add_argument("--segments", type=int, default=16, help="segments per sample")
    parser.add_argument("--samples", type=int, default=8, help="samples to read (the first ones)")
    parser.add_argument("--out", default="eval-lm", help="output directory")
    parser.set_defaults(func=_eval_lm)


def _at_least_one(args, *names: str) -> None:
    low = [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) < 1]
    if low:
        raise InputError(f"{', '.join(low)} must be >= 1")


def _check_out(out: str, names, overwrite: bool) -> None:
    check_output_dir(out)
    check_outputs_free(out, names, overwrite)


def _write_report(report, model, args, names, heading: str) -> int:
    # Checked again: another run may have written there while this one evaluated.
    _check_out(args.out, names, args.overwrite)
    paths = report.write(args.out, title=model.label())
    print(f"{heading}, {model.label()}")
    print(report.table())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def check_text_files(paths, what: str) -> None:
    """Each of `paths` exists and is UTF-8 text, checked before a model is loaded."""
    from rmt_scale.data.text import check_text_file

    check_files(paths, what)
    for path in paths or ():
        check_text_file(path)


def _eval(args) -> int:
    from rmt_scale.evaluation import evaluate_babilong, parse_lengths, parse_tasks
    from rmt_scale.evaluation.accuracy import OUTPUT_FILES

    if args.data is not None:
        return _eval_data(args)
    if args.template is not None or args.fields is not None:
        raise InputError("--template and --fields apply to --data (your QA rows)")
    # Everything cheap is checked before the model is loaded.
    if args.babi_dir is not None and not Path(args.babi_dir).is_dir():
        raise InputError(f"{args.babi_dir}: no such bAbI directory")
    tasks = parse_tasks(args.tasks or "qa1", args.babi_dir)
    if args.babi_dir is not None:  # a malformed bAbI file fails in a second, not after the model load
        from rmt_scale.data import load_babi_samples

        for task in tasks:
            for split in dict.fromkeys(("train", args.split)):
                load_babi_samples(task, split, args.babi_dir)
    lengths = parse_lengths(args.lengths or "0k,1k,4k")
    check_text_files(args.noise, "noise")
    _at_least_one(args, "samples", "batch_size", "max_new_tokens")
    _check_out(args.out, OUTPUT_FILES, args.overwrite)
    model = _load_answering_model(args)
    report = evaluate_babilong(
        model, tasks, lengths, args.samples, seed=args.seed, split=args.split,
        babi_dir=args.babi_dir, noise_files=args.noise, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, cache_dir=args.cache_dir, progress=not args.no_progress,
    )
    return _write_report(report, model, args, OUTPUT_FILES, "BABILong accuracy (%)")


def _load_answering_model(args):
    """The model `eval` generates answers with; `--no-carry` (checked before loading) turns off
    the memory carried between segments."""
    from rmt_scale.evaluation import load_eval_model
    from rmt_scale.model.saving import RMT_CONFIG_FILE

    if args.no_carry and not args.num_mem_tokens and not (Path(args.model).expanduser() / RMT_CONFIG_FILE).is_file():
        raise InputError(f"--no-carry: {args.model} has no memory to leave out (no {RMT_CONFIG_FILE}); "
                         "pass a memory model or adapter, or give --num-mem-tokens")
    model = load_eval_model(args.model, base=args.base, num_mem_tokens=args.num_mem_tokens,
                            segment_size=args.segment_size, device=args.device, dtype=args.dtype,
                            trust_remote_code=args.trust_remote_code)
    model.carry_memory = not args.no_carry
    return model


def _eval_lm(args) -> int:
    from rmt_scale.config import RMTConfig
    from rmt_scale.evaluation import evaluate_segments, load_eval_model
    from rmt_scale.evaluation.perplexity import LM_OUTPUT_FILES
    from rmt_scale.model.saving import RMT_CONFIG_FILE

    _at_least_one(args, "segments", "samples", "batch_size")
    _check_text_sources(args.data)
    _check_out(args.out, LM_OUTPUT_FILES, args.overwrite)
    num_mem_tokens = args.num_mem_tokens
    if num_mem_tokens is None and not (Path(args.model) / RMT_CONFIG_FILE).is_file():
        num_mem_tokens = RMTConfig().num_mem_tokens  # a base checkpoint: fresh memory
    model = load_eval_model(args.model, base=args.base, num_mem_tokens=num_mem_tokens,
                            segment_size=args.segment_size, device=args.device, dtype=args.dtype,
                            trust_remote_code=args.trust_remote_code)
    report = evaluate_segments(model, args.data, args.segments, args.samples, args.batch_size,
                               cache_dir=args.cache_dir, progress=not args.no_progress,
                               field=args.field, short_documents=args.short_documents)
    return _write_report(report, model, args, LM_OUTPUT_FILES, "Loss per segment position")


def _check_text_sources(sources) -> None:
    """Sources of documents exist (and plain-text files are UTF-8), checked before a model loads."""
    from rmt_scale.data import resolve_sources

    check_text_files([s.path for s in resolve_sources(sources) if s.kind == "text"], "text")


def _parse_fields(text: str | None) -> dict[str, str] | None:
    """`context=document,answer=target` -> {"context": "document", "answer": "target"}."""
    if text is None:
        return None
    pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
    if not pairs or any(len(pair) != 2 or not pair[0].strip() or not pair[1].strip() for pair in pairs):
        raise InputError(f"--fields {text!r}: expected KEY=NAME pairs, e.g. context=document,answer=target")
    return {key.strip(): name.strip() for key, name in pairs}


def _eval_data(args) -> int:
    """`eval --data`: your QA rows (exact match, contains) or the official BABILong files."""
    from rmt_scale.data import get_template, resolve_sources
    from rmt_scale.data.babilong_official import babilong_sources
    from rmt_scale.data.qa import qa_records
    from rmt_scale.data.sources import read_rows
    from rmt_scale.evaluation import parse_lengths
    from rmt_scale.evaluation.accuracy import OUTPUT_FILES
    from rmt_scale.evaluation.qa_eval import (
        evaluate_babilong_official,
        evaluate_qa_data,
        official_layout,
    )

    # Everything cheap is checked before the model is loaded.
    if args.babi_dir is not None or args.noise is not None:
        raise InputError("--babi-dir and --noise build BABILong samples; --data reads yours, give one or the other")
    _at_least_one(args, "samples", "batch_size", "max_new_tokens")
    layout = official_layout(args.data)
    if layout is not None:
        if args.fields is not None:
            raise InputError(f"--fields: {args.data} is the official BABILong layout, with its own fields")
        template = args.template or "babilong"
        tasks = _listed(args.tasks) or sorted({t for ts in layout.values() for t in ts},
                                              key=lambda t: (len(t), t))
        lengths = parse_lengths(args.lengths) if args.lengths else sorted(layout, key=_length_order)
        if not tasks or not lengths:
            raise InputError(f"{args.data}: give --tasks and --lengths (the cached dataset cannot be listed)")
        # Both given: every cell must be there. Otherwise a missing cell is left out ("-" in the
        # table), but a task or length with no cell at all fails now, naming what there is.
        strict = not layout or bool(args.tasks and args.lengths)
        for task in tasks:
            for length in lengths:
                excused = (any(task in layout.get(other, ()) for other in lengths)
                           and any(other in layout.get(length, ()) for other in tasks))
                if strict or not (task in layout.get(length, ()) or excused):
                    babilong_sources(args.data, task, length)
    else:
        if args.tasks is not None or args.lengths is not None:
            raise InputError("--tasks and --lengths select official BABILong data; your rows are grouped "
                             "by prompt length")
        template = args.template or "plain"
        fields = _parse_fields(args.fields)
        uses_context = True if template == "chat" else get_template(template).uses_context
        # Every row checked (fields, types, UTF-8) before a model is loaded: a bad row fails in a second.
        sources = resolve_sources(args.data)
        if not sum(1 for _ in qa_records(read_rows(sources), fields, None, uses_context)):
            raise DataError(f"{', '.join(s.path for s in sources)}: no QA rows")
    _check_out(args.out, OUTPUT_FILES, args.overwrite)
    model = _load_answering_model(args)
    common = dict(num_samples=args.samples, template=template, batch_size=args.batch_size,
                  max_new_tokens=args.max_new_tokens, cache_dir=args.cache_dir,
                  progress=not args.no_progress)
    if layout is not None:
        report = evaluate_babilong_official(model, args.data, tasks, lengths,
                                            available=None if strict else layout, **common)
        return _write_report(report, model, args, OUTPUT_FILES, "BABILong accuracy (%), official data")
    report = evaluate_qa_data(model, args.data, fields=fields, **common)
    return _write_report(report, model, args, OUTPUT_FILES, "Accuracy (%) on your QA data by prompt tokens")


def _listed(text: str | None) -> list[str]:
    """--tasks for the official data: checked names only (the data has them, not the generator)."""
    from rmt_scale.data.babi import task_number

    tasks = list(dict.fromkeys(t.strip().lower() for t in (text or "").split(",") if t.strip()))
    for task in tasks:
        task_number(task)
    return tasks


def _length_order(length: str) -> int:
    from rmt_scale.data import parse_length

    return parse_length(length)
