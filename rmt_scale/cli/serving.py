"""`rmt-scale read`, `ask` and `serve`: read a document into a memory state once, ask it many times."""

from __future__ import annotations

import sys
from pathlib import Path

from rmt_scale.cli.common import add_command


def add_model_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="saved memory-model / adapter directory")
    parser.add_argument("--base", default=None, help="base checkpoint (default: the recorded path)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="dtype to run in (auto: the checkpoint's); a state is read and asked in one dtype")


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "read", help="read a document into a memory state file",
        example="rmt-scale read --model adapter/ --input book.txt --out book.state\n"
                "rmt-scale read --model adapter/ --input more.txt --append book.state --out book.state --overwrite")
    add_model_arguments(parser)
    parser.add_argument("--input", required=True, help="UTF-8 text file to read ('-' for stdin)")
    parser.add_argument("--append", default=None, metavar="STATE",
                        help="continue from this memory state instead of starting empty")
    parser.add_argument("--out", required=True, metavar="STATE", help="memory state file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_read)

    parser = add_command(
        subparsers, "ask", help="answer questions from a memory state, one answer per line",
        example='rmt-scale ask --model adapter/ --memory book.state "Who wrote the letter?"\n'
                "rmt-scale ask --model adapter/ --memory book.state --questions questions.txt")
    add_model_arguments(parser)
    parser.add_argument("--memory", required=True, metavar="STATE", help="memory state file (rmt-scale read)")
    parser.add_argument("questions", nargs="*", help="questions (default: --questions, else stdin)")
    parser.add_argument("--questions", dest="questions_file", default=None, metavar="FILE",
                        help="file with one question per line ('-' for stdin)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--chat", action="store_true",
                        help="ask in the chat template's user turn (default: 'Question: ... Answer:')")
    parser.add_argument("--batch-size", type=int, default=8, help="questions answered at once")
    parser.set_defaults(func=_ask)

    parser = add_command(
        subparsers, "serve", help="HTTP server: OpenAI-style completions over saved memories",
        example="rmt-scale serve --model adapter/ --memory-dir memories/ --port 8000")
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; there is no authentication, so keep it local")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--memory-dir", default="memories", help="where memories persist")
    parser.add_argument("--files-dir", default=None,
                        help="the only directory memories may be read from by server-side path (default: none)")
    parser.add_argument("--name", default=None, help="model id in the API (default: the adapter's directory name)")
    parser.add_argument("--max-request-bytes", type=int, default=8 << 20)
    parser.add_argument("--max-file-bytes", type=int, default=64 << 20)
    parser.add_argument("--max-new-tokens", type=int, default=512, help="largest max_tokens a request may ask")
    parser.add_argument("--max-concurrent-reads", type=int, default=2,
                        help="documents read at once; more requests get 429")
    parser.set_defaults(func=_serve)


def _load(args):
    from rmt_scale.serving.reader import MemoryReader

    return MemoryReader.load(args.model, base=args.base, dtype=args.dtype, name=getattr(args, "name", None))


def _read_text(name: str) -> str:
    from rmt_scale.errors import InputError

    if name == "-":
        return sys.stdin.read()
    path = Path(name)
    if not path.is_file():
        raise InputError(f"{path}: no such input file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None


def _read(args) -> int:
    from tqdm import tqdm

    from rmt_scale.errors import InputError
    from rmt_scale.serving.state import load_state, save_state, source_record

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise InputError(f"--out {out} exists; pass --overwrite to replace it")
    text = _read_text(args.input)
    reader = _load(args)
    state, sources, created = reader.initial_state(), [], None
    if args.append:
        state, info = load_state(args.append, reader.identity)
        sources, created = info.sources, info.created
    ids = reader.encode(text, document_start=state.tokens_read == 0)
    with tqdm(total=ids.numel(), unit="tok", unit_scale=True, file=sys.stderr, disable=args.quiet,
              desc="reading") as bar:
        state = reader.read_ids(ids, state, progress=bar.update)
        bar.update(ids.numel() - bar.n)  # the unread tail is kept, not read: count it as done
    name = "stdin" if args.input == "-" else Path(args.input).name
    sources = [*sources, source_record(name, text, ids.numel())]
    save_state(out, state, reader.identity, sources, created)
    print(f"read {ids.numel():,} tokens ({state.tokens_read:,} in all) into {out}")
    return 0


def _questions(args) -> list[str]:
    from rmt_scale.errors import InputError

    if args.questions and args.questions_file:
        raise InputError("give questions as arguments or with --questions, not both")
    if args.questions:
        questions = args.questions
    else:
        questions = [line.strip() for line in _read_text(args.questions_file or "-").splitlines()]
    questions = [q for q in questions if q]
    if not questions:
        raise InputError("no questions given")
    return questions


def _ask(args) -> int:
    from rmt_scale.errors import InputError
    from rmt_scale.serving.state import load_state

    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise InputError("--batch-size and --max-new-tokens must be positive")
    questions = _questions(args)
    reader = _load(args)
    state, _ = load_state(args.memory, reader.identity)
    for start in range(0, len(questions), args.batch_size):
        batch = questions[start : start + args.batch_size]
        prompts = [reader.question_prompt(q, chat=args.chat) for q in batch]
        for answer in reader.complete([state] * len(batch), prompts, args.max_new_tokens):
            print(" ".join(answer.text.split()), flush=True)  # one line per answer, whatever it holds
    return 0


def _serve(args) -> int:
    from rmt_scale.serving.app import serve
    from rmt_scale.serving.limits import ModelWorker, ServerLimits

    limits = ServerLimits(max_request_bytes=args.max_request_bytes, max_file_bytes=args.max_file_bytes,
                          max_new_tokens=args.max_new_tokens, max_concurrent_reads=args.max_concurrent_reads)
    worker = ModelWorker(limits.max_waiting_jobs)
    reader = worker.call(_load, args)  # torch then runs in the worker thread alone (limits.py says why)
    serve(reader, args.memory_dir, host=args.host, port=args.port, files_dir=args.files_dir, limits=limits,
          worker=worker)
    return 0
