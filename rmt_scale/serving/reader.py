"""MemoryReader: a loaded adapter and its tokenizer, reading text into memory states and answering
prompts from them. The CLI (`rmt-scale read` / `ask`) and the server share it.

Text becomes ids here and nowhere else: a document's first piece is encoded with the tokenizer's
special tokens (a BOS, where the tokenizer adds one), appended pieces and prompts without, each piece
on its own. Reading ids in pieces equals reading them whole (model/memory_state.py); reading *text*
in pieces equals reading it whole wherever the tokenizer does not merge across the cut, which a
cut at a line break or a space preceding a word ensures for byte-level BPE tokenizers.

Not thread-safe: torch must not run two generations on one model at once, so the server calls a
reader from a single worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from rmt_scale.data.babilong import PROMPT_TEMPLATE
from rmt_scale.errors import InputError, first_line
from rmt_scale.model.loading import load_tokenizer, parse_dtype
from rmt_scale.model.memory_state import MemoryState
from rmt_scale.model.recurrent import RecurrentMemoryModel
from rmt_scale.model.saving import recorded_base_path
from rmt_scale.serving.state import ModelIdentity


@dataclass
class Completion:
    """One generated answer.

    Attributes:
        text: The decoded new tokens, cut before the first stop string.
        prompt_tokens: Tokens of the prompt (the state's unread tail not included).
        completion_tokens: New tokens generated.
        finish_reason: "stop" (end of sequence or a stop string) or "length" (max_new_tokens).
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop string, and whether one was found."""
    cuts = [text.find(s) for s in stop if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


class Cancelled(StoppingCriteria):
    """Stops every row once `event` is set (a streaming client went away)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool,
                          device=input_ids.device)


class TextDeltas(BaseStreamer):
    """Hands `on_text` the new text of a one-row generation as it grows.

    What could still change is held back: a trailing partial UTF-8 character, and the last
    characters that might begin a stop string. What is handed out concatenates to the final text.
    """

    def __init__(self, render: Callable[[list[int]], str], on_text: Callable[[str], None],
                 stop: Sequence[str]):
        self.render, self.on_text = render, on_text
        self.hold = max((len(s) for s in stop), default=1) - 1
        self.ids: list[int] = []
        self.sent = 0
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate first hands over the prompt's ids (none: inputs_embeds)
            self.prompt_seen = True
            return
        self.ids.extend(value.reshape(-1).tolist())
        text = self.render(self.ids)
        safe = len(text.rstrip("\ufffd")) - self.hold
        if safe > self.sent:
            self.on_text(text[self.sent : safe])
            self.sent = safe

    def end(self) -> None:
        text = self.render(self.ids)
        if len(text) > self.sent:
            self.on_text(text[self.sent :])
            self.sent = len(text)


class MemoryReader:
    """Reads text into memory states and answers prompts from them.

    Args:
        model: The memory model (put in eval mode here).
        tokenizer: Its tokenizer.
        name: What the model is called (the server's model id).
    """

    def __init__(self, model: RecurrentMemoryModel, tokenizer, name: str):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.identity = ModelIdentity.of(model, tokenizer)  # once: hashing walks every weight
        eos = getattr(model.cell.causal_lm.generation_config, "eos_token_id", None)
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {int(i) for i in [*eos, tokenizer.eos_token_id] if i is not None}

    @classmethod
    def load(cls, adapter: str | Path, base: str | None = None, dtype: str | None = None,
             name: str | None = None) -> MemoryReader:
        """Load an adapter directory (its recorded base unless `base`) and its tokenizer."""
        kwargs = {}
        if parse_dtype(dtype) is not None:
            kwargs["dtype"] = parse_dtype(dtype)
        model = RecurrentMemoryModel.from_pretrained(adapter, base_model_name_or_path=base, **kwargs)
        tokenizer = load_tokenizer(adapter, base or recorded_base_path(adapter))
        return cls(model, tokenizer, name or Path(adapter).resolve().name)

    def encode(self, text: str, document_start: bool) -> torch.Tensor:
        ids = self.tokenizer(text, add_special_tokens=document_start, return_attention_mask=False)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    def initial_state(self) -> MemoryState:
        return self.model.initial_state()

    def read_ids(self, ids: torch.Tensor, state: MemoryState | None = None,
                 progress: Callable[[int], None] | None = None) -> MemoryState:
        """Read `ids` (1-D) on from `state` (default: nothing read yet)."""
        return self.model.read([ids], [state or self.initial_state()], progress)[0]

    def read_text(self, text: str, state: MemoryState | None = None,
                  progress: Callable[[int], None] | None = None) -> MemoryState:
        """Read `text` on from `state`: the start of a document when `state` has read nothing."""
        state = state or self.initial_state()
        return self.read_ids(self.encode(text, document_start=state.tokens_read == 0), state, progress)

    def question_prompt(self, question: str, chat: bool = False) -> str:
        """The prompt that asks `question` after a document: the chat template's user turn, or the
        Question/Answer lines the BABILong adapters were trained on."""
        if chat:
            return self.chat_prompt([{"role": "user", "content": question}])
        return PROMPT_TEMPLATE.format(context="", question=question)

    def chat_prompt(self, messages: list[dict]) -> str:
        """The chat template applied to `messages`, ready for the assistant's turn."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise InputError(f"the tokenizer of {self.name} has no chat template; use plain completions")
        from jinja2 import TemplateError

        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except TemplateError as err:  # the template refused these messages (roles, order)
            raise InputError(f"the chat template rejects these messages: {first_line(err)}") from None

    def complete(self, states: Sequence[MemoryState], prompts: Sequence[str], max_new_tokens: int,
                 stop: Sequence[str] = (), temperature: float = 0.0, top_p: float = 1.0,
                 on_text: Callable[[str], None] | None = None, cancel: threading.Event | None = None,
                 max_prompt_tokens: int | None = None) -> list[Completion]:
        """Answer prompt i after state i (one batch): greedy unless `temperature` > 0.

        Args:
            on_text: Called with each new piece of text as it is generated (one prompt only).
            cancel: Set it to stop generating early (the answers so far are returned).
            max_prompt_tokens: Refuse longer prompts (InputError) rather than read them.
        """
        if on_text is not None and len(prompts) != 1:
            raise InputError("streaming answers one prompt at a time")
        stop = [s for s in stop if s]
        prompt_ids = [self.encode(p, document_start=s.tokens_read == 0) for s, p in zip(states, prompts)]
        longest = max((ids.numel() for ids in prompt_ids), default=0)
        if max_prompt_tokens is not None and longest > max_prompt_tokens:
            raise InputError(f"a prompt of {longest} tokens is over the limit of {max_prompt_tokens}; "
                             "read long documents into a memory instead")
        generation: dict = {"do_sample": False}
        if temperature > 0:
            generation = {"do_sample": True, "temperature": temperature, "top_p": top_p}
        if stop:
            generation.update(stop_strings=stop, tokenizer=self.tokenizer)
        if cancel is not None:
            generation["stopping_criteria"] = StoppingCriteriaList([Cancelled(cancel)])
        if on_text is not None:
            generation["streamer"] = TextDeltas(lambda ids: self.render(ids, stop)[0], on_text, stop)
        new_tokens = self.model.generate_from_states(states, prompt_ids, max_new_tokens, **generation)
        return [self.completion(row.tolist(), prompt.numel(), stop) for row, prompt in zip(new_tokens, prompt_ids)]

    def render(self, ids: list[int], stop: Sequence[str]) -> tuple[str, bool, int]:
        """(text cut at the first stop string, whether it ended, tokens up to the end)."""
        end = next((i for i, token in enumerate(ids) if token in self.eos_ids), None)
        kept = ids if end is None else ids[:end]
        text, stopped = cut_at_stop(self.tokenizer.decode(kept, skip_special_tokens=True), stop)
        return text, stopped or end is not None, len(kept) + (end is not None)

    def completion(self, ids: list[int], prompt_tokens: int, stop: Sequence[str]) -> Completion:
        text, ended, used = self.render(ids, stop)
        pad = self.tokenizer.pad_token_id
        # A row stopped by a stop string is padded to the batch's length; pads are not its tokens.
        while used and ids[used - 1] == pad and ids[used - 1] not in self.eos_ids:
            used -= 1
        return Completion(text, prompt_tokens, used, "stop" if ended else "length")
