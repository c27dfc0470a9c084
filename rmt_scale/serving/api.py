"""The server's request bodies and response objects, shaped after the OpenAI API where it has one.

Requests accept (and ignore) OpenAI fields the server does not use, so stock clients work; the
extra field `memory` names a saved memory to answer from. Memory requests are strict: an unknown
field is an error, not a silently ignored typo.
"""

from __future__ import annotations

import secrets
import time

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rmt_scale.serving.reader import Completion


class GenerationRequest(BaseModel):
    """What /v1/completions and /v1/chat/completions share."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    # OpenAI's own bound; each stop string costs a pass over the vocabulary when generation starts.
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1, description="only 1 is supported")
    memory: str | None = None

    @field_validator("stop")
    @classmethod
    def few_short_stop_strings(cls, stop):
        strings = [stop] if isinstance(stop, str) else stop or []
        if len(strings) > 4 or any(len(s) > 64 for s in strings):
            raise ValueError("give at most 4 stop strings of at most 64 characters")
        return stop

    def stop_strings(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class CompletionRequest(GenerationRequest):
    prompt: str | list[str]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        """The message's text: a string, or its text parts joined (other parts are refused)."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        if any(part.type != "text" or part.text is None for part in self.content):
            raise ValueError("only text message parts are supported")
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class MemoryText(BaseModel):
    """A document to read: posted `text`, or a server-side `file` in the allowed directory."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    file: str | None = None
    name: str | None = Field(None, max_length=200, description="what to call the source")

    @model_validator(mode="after")
    def one_source(self):
        if (self.text is None) == (self.file is None):
            raise ValueError("give exactly one of 'text' or 'file'")
        return self


class MemoryCreate(MemoryText):
    id: str | None = None


def error_body(message: str, kind: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def usage(completions: list[Completion]) -> dict:
    prompt = sum(c.prompt_tokens for c in completions)
    generated = sum(c.completion_tokens for c in completions)
    return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def completion_object(model: str, completions: list[Completion]) -> dict:
    return {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": i, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
                        for i, c in enumerate(completions)],
            "usage": usage(completions)}


def chat_object(model: str, completion: Completion) -> dict:
    return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.text},
                         "logprobs": None, "finish_reason": completion.finish_reason}],
            "usage": usage([completion])}


def completion_chunk(ident: str, created: int, model: str, text: str, finish: str | None) -> dict:
    return {"id": ident, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}


def chat_chunk(ident: str, created: int, model: str, delta: dict, finish: str | None) -> dict:
    return {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
