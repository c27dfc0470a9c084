"""What bounds the server: request sizes, the one model worker and its queue, concurrent reads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from starlette.responses import JSONResponse

from rmt_scale.errors import ConfigError, RMTScaleError


@dataclass
class ServerLimits:
    """Bounds on what one request may ask of the server.

    Attributes:
        max_request_bytes: Largest request body; a larger one gets 413 before it is parsed.
        max_file_bytes: Largest server-side document a memory may be read from.
        max_prompt_tokens: Longest prompt of a completion (documents go to the memory endpoints).
        max_new_tokens: Largest max_tokens a completion may ask for.
        max_prompts: Most prompts in one /v1/completions request (they run as one batch).
        max_concurrent_reads: Memory creations and appends under way at once; more get 429.
        max_waiting_jobs: Model jobs queued for the worker at once; more get 429.
        read_chunk_tokens: A document is read in chunks of this many tokens, so that questions
            wait behind at most one chunk of a long read, never the whole document.
    """

    max_request_bytes: int = 8 << 20
    max_file_bytes: int = 64 << 20
    max_prompt_tokens: int = 8192
    max_new_tokens: int = 512
    max_prompts: int = 16
    max_concurrent_reads: int = 2
    max_waiting_jobs: int = 64
    read_chunk_tokens: int = 16384

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"server limit {name} must be a positive integer, got {value!r}")


class Busy(RMTScaleError):
    """The server is at one of its limits; the client should retry later (HTTP 429)."""


class ModelWorker:
    """Runs every model call in one thread, one after another.

    torch does not support two generations on one model at once. One thread is also faster: each
    thread that runs torch on CPU keeps an OpenMP team of its own, and once two have, every call
    ran about 1.6x slower on the 2-core benchmark machine. So load the model with `call` too, and
    hand this worker to the app. The queue is bounded: past `max_waiting` jobs, `run` raises Busy
    instead of queueing.
    """

    def __init__(self, max_waiting: int):
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rmt-scale-model")
        self.max_waiting = max_waiting
        self.jobs = 0  # touched only on the event loop's thread

    def check_capacity(self) -> None:
        if self.jobs >= self.max_waiting:
            raise Busy(f"{self.jobs} model jobs are waiting already; retry later")

    def call(self, function: Callable, *args, **kwargs):
        """Run `function` in the worker thread and wait for it (outside the event loop: start-up)."""
        return self.executor.submit(function, *args, **kwargs).result()

    async def run(self, function: Callable, *args, **kwargs):
        self.check_capacity()
        self.jobs += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.executor, partial(function, *args, **kwargs))
        finally:
            self.jobs -= 1

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` gets 413 with a JSON error, before any parsing.

    The body is read here (so the limit holds whatever Content-Length claims) and handed on whole.
    An oversize body is drained up to `drain_bytes` before answering, so the client, still sending,
    reads the 413 rather than a reset connection; past that it is answered at once.
    """

    def __init__(self, app, max_bytes: int, error: Callable[[str], dict]):
        self.app, self.max_bytes, self.error = app, max_bytes, error
        self.drain_bytes = max(4 * max_bytes, 1 << 20)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size <= self.max_bytes:
                chunks.append(message.get("body", b""))
            if size > self.drain_bytes or not message.get("more_body", False):
                break
        if size > self.max_bytes:
            response = JSONResponse(self.error(f"request body over the limit of {self.max_bytes:,} bytes"),
                                    status_code=413)
            return await response(scope, receive, send)
        body, delivered = b"".join(chunks), False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as ASGI apps expect

        await self.app(scope, replay, send)
