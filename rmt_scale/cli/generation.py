"""`rmt-scale generate`: answer with memory over a long prompt, streamed to stdout as it comes."""

from __future__ import annotations

import sys
from pathlib import Path

from rmt_scale.cli.common import add_command, add_trust_remote_code, check_files
from rmt_scale.errors import InputError


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "generate", "generate with memory from a saved memory model over a (long) prompt",
        "rmt-scale generate --model adapters/smollm2 --prompt-file long_prompt.txt --max-new-tokens 64\n"
        "cat notes.txt | rmt-scale generate --model adapters/smollm2 --chat --do-sample --temperature 0.7 --seed 1",
    )
    parser.add_argument("--model", required=True, help="saved memory-model / adapter directory")
    parser.add_argument("--base", default=None, help="base checkpoint (default: the recorded path)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--prompt-file", help="text file with the prompt, '-' for stdin (default: stdin "
                                              "when --prompt is not given either)")
    source.add_argument("--prompt", help="the prompt itself")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate at most")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="weights dtype (auto: the checkpoint's)")
    add_trust_remote_code(parser)
    sampling = parser.add_argument_group("sampling (greedy decoding unless --do-sample)")
    sampling.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    sampling.add_argument("--temperature", type=float, default=1.0, help="softmax temperature, > 0")
    sampling.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass, in (0, 1]")
    sampling.add_argument("--top-k", type=int, default=50, help="sample from the k likeliest tokens; 0: all")
    sampling.add_argument("--seed", type=int, default=None,
                          help="seed of the sampling, for a repeatable answer (default: unseeded)")
    parser.set_defaults(func=_generate)


def _sampling(args) -> dict:
    """generate() keyword arguments of the sampling options, checked."""
    if args.max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if not args.temperature > 0:
        raise InputError(f"--temperature must be > 0, got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise InputError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.top_k < 0:
        raise InputError(f"--top-k must be >= 0 (0: no limit), got {args.top_k}")
    if not args.do_sample:
        return {"do_sample": False}
    # Passed explicitly, so a checkpoint's own generation_config does not change what the options say.
    return {"do_sample": True, "temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k}


def _read_prompt(args) -> str:
    from rmt_scale.data.text import read_utf8

    if args.prompt is not None:
        prompt = args.prompt
    elif args.prompt_file not in (None, "-"):
        check_files([args.prompt_file], "prompt")
        prompt = read_utf8(args.prompt_file)
    else:
        if sys.stdin.isatty():
            print("reading the prompt from stdin; end it with Ctrl-D", file=sys.stderr)
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise InputError("the prompt is empty; pass --prompt, --prompt-file or text on stdin")
    return prompt


def _encode(tokenizer, prompt: str, chat: bool, model: str):
    """(1, T) prompt ids, in the chat template with `chat`."""
    import torch

    if not chat:
        return tokenizer(prompt, return_tensors="pt").input_ids
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(f"the tokenizer of {model} has no chat template; drop --chat")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                        add_generation_prompt=True, return_tensors="pt")
    return ids if torch.is_tensor(ids) else ids["input_ids"]


def _generate(args) -> int:
    import torch
    from transformers import TextStreamer

    from rmt_scale.evaluation import load_eval_model
    from rmt_scale.model.loading import cached_model_dir
    from rmt_scale.model.saving import RMT_CONFIG_FILE

    # Everything cheap is checked before the model is loaded.
    generation = _sampling(args)
    prompt = _read_prompt(args)
    # A model id in the local Hugging Face cache is checked in its snapshot directory.
    model_dir = Path(args.model) if Path(args.model).is_dir() else cached_model_dir(args.model)
    if model_dir is not None and not (model_dir / RMT_CONFIG_FILE).is_file():
        raise InputError(f"{model_dir}: no {RMT_CONFIG_FILE}, so not a memory model; pass a directory "
                         "written by `rmt-scale export` or save_pretrained")
    loaded = load_eval_model(args.model, base=args.base, device=args.device, dtype=args.dtype,
                             trust_remote_code=args.trust_remote_code)
    ids = _encode(loaded.tokenizer, prompt, args.chat, args.model).to(loaded.device)
    if args.seed is not None:
        torch.manual_seed(args.seed)  # transformers samples from the global generator
    # The streamer prints each piece of text as soon as it decodes to whole words, then a newline.
    streamer = TextStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
    loaded.model.generate(ids, max_new_tokens=args.max_new_tokens, streamer=streamer, **generation)
    return 0
