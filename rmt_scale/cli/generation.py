"""`rmt-scale generate`: answer with memory over a long prompt."""

from __future__ import annotations

import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate", help="generate with memory from a saved memory model over a (long) prompt"
    )
    parser.add_argument("--model", required=True, help="saved memory-model / adapter directory")
    parser.add_argument("--base", default=None, help="base checkpoint (default: the recorded path)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt-file", help="text file with the prompt ('-' for stdin)")
    source.add_argument("--prompt", help="the prompt itself")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    parser.set_defaults(func=_generate)


def _generate(args) -> int:
    import torch

    from rmt_scale.model.loading import load_tokenizer
    from rmt_scale.model.recurrent import RecurrentMemoryModel
    from rmt_scale.model.saving import recorded_base_path

    if args.prompt is not None:
        prompt = args.prompt
    elif args.prompt_file == "-":
        prompt = sys.stdin.read()
    else:
        path = Path(args.prompt_file)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such prompt file")
        prompt = path.read_text(encoding="utf-8")
    model = RecurrentMemoryModel.from_pretrained(args.model, base_model_name_or_path=args.base)
    model.eval()
    tokenizer = load_tokenizer(args.model, args.base or recorded_base_path(args.model))
    if args.chat:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt"
        )
        ids = ids["input_ids"] if not torch.is_tensor(ids) else ids
    else:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
    new = model.generate(ids, max_new_tokens=args.max_new_tokens)
    print(tokenizer.decode(new[0], skip_special_tokens=True))
    return 0
