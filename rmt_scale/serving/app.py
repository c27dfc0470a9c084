"""The HTTP server: OpenAI-style completions that may answer from a saved memory, and memories.

    GET    /v1/models
    POST   /v1/completions            {"prompt", "max_tokens", "stream", "stop", ..., "memory": ID}
    POST   /v1/chat/completions       {"messages", "max_tokens", "stream", ..., "memory": ID}
    POST   /v1/memories               {"text" | "file", "id"?, "name"?}    -> 201, the memory
    GET    /v1/memories               {"object": "list", "data": [memory, ...]}
    GET    /v1/memories/{id}
    POST   /v1/memories/{id}/append   {"text" | "file", "name"?}
    DELETE /v1/memories/{id}

A completion naming a memory answers as if the memory's document came right before the prompt; one
without a memory is plain RMT generation over the prompt. Every model call runs in one worker
thread (limits.ModelWorker). A memory is written only after its whole document has been read, and
atomically, and writes to one memory id take turns (a lock per id), so a failed or rejected request
leaves every memory as it was. Errors are JSON `{"error": {"message", "type", ...}}` with a 4xx
status (429 when a limit on waiting work is reached); a 500 would be a bug, and carries no traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from rmt_scale.errors import InputError, MemoryStateError, RMTScaleError, first_line
from rmt_scale.serving import api
from rmt_scale.serving.limits import BodyLimit, Busy, ModelWorker, ServerLimits
from rmt_scale.serving.reader import MemoryReader
from rmt_scale.serving.state import source_record
from rmt_scale.serving.store import MemoryExists, MemoryNotFound, MemoryStore, allowed_file

logger = logging.getLogger(__name__)

COMPLETION_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions
CHAT_TOKENS = 128  # chat has no OpenAI default short enough for a CPU; this one is


class ModelNotFound(InputError):
    """A request named another model than the one served."""


def status_of(err: Exception) -> tuple[int, str]:
    """HTTP status and OpenAI error type of a user error."""
    if isinstance(err, (MemoryNotFound, ModelNotFound)):
        return 404, "not_found_error"
    if isinstance(err, MemoryExists):
        return 409, "conflict_error"
    if isinstance(err, MemoryStateError):
        return 422, "invalid_request_error"
    if isinstance(err, Busy):
        return 429, "rate_limit_error"
    return 400, "invalid_request_error"


def validation_message(err: RequestValidationError) -> str:
    """The first problem pydantic found, on one line."""
    first = err.errors()[0] if err.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ())[1:])
    message = str(first.get("msg", "invalid request")).splitlines()[0]
    return f"{where}: {message}" if where else message


def sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def create_app(reader: MemoryReader, memory_dir: str | Path, files_dir: str | Path | None = None,
               limits: ServerLimits | None = None, worker: ModelWorker | None = None) -> FastAPI:
    """The server's ASGI app.

    Args:
        reader: The loaded model.
        memory_dir: Where memories persist (created if missing).
        files_dir: The only directory server-side documents may be read from; None: none may.
        limits: Request bounds (ServerLimits defaults when None).
        worker: The thread that loaded `reader` (ModelWorker.call), to run every model call in;
            a new one when None. The app shuts it down when it stops.
    """
    limits = limits or ServerLimits()
    store = MemoryStore(memory_dir, reader.identity)
    files_root = Path(files_dir) if files_dir is not None else None
    worker = worker or ModelWorker(limits.max_waiting_jobs)
    initial = worker.call(reader.initial_state)  # states never change in place: one serves all
    locks: dict[str, list] = {}  # memory id -> [lock, requests holding or awaiting it]
    reads_under_way = 0

    @asynccontextmanager
    async def lifespan(_app):
        yield
        worker.shutdown()

    app = FastAPI(title="rmt-scale", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes,
                       error=lambda message: api.error_body(message, "invalid_request_error", "too_large"))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, err: RequestValidationError):
        return JSONResponse(api.error_body(validation_message(err), "invalid_request_error"), 400)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, err: HTTPException):
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return JSONResponse(api.error_body(str(err.detail), kind), err.status_code)

    @app.exception_handler(RMTScaleError)
    @app.exception_handler(ValueError)
    async def user_error(_request: Request, err: Exception):
        status, kind = status_of(err)
        headers = {"Retry-After": "1"} if status == 429 else None
        return JSONResponse(api.error_body(first_line(err), kind), status, headers=headers)

    @app.exception_handler(Exception)
    async def bug(_request: Request, err: Exception):
        logger.exception("internal error")
        return JSONResponse(api.error_body("internal server error", "server_error"), 500)

    def check_model(body: api.GenerationRequest) -> None:
        if body.model not in (None, reader.name):
            raise ModelNotFound(f"model {body.model!r} is not served here; this server serves {reader.name!r}")

    def max_tokens(requested: int | None, default: int) -> int:
        value = requested or min(default, limits.max_new_tokens)
        if value > limits.max_new_tokens:
            raise InputError(f"max_tokens {value} is over the server's limit of {limits.max_new_tokens}")
        return value

    async def memory_state(memory_id: str | None):
        if memory_id is None:
            return initial
        state, _ = await worker.run(store.load, memory_id)
        return state

    def generation(body: api.GenerationRequest, default_tokens: int) -> dict:
        return dict(max_new_tokens=max_tokens(body.max_tokens, default_tokens), stop=body.stop_strings(),
                    temperature=body.temperature or 0.0, top_p=body.top_p or 1.0,
                    max_prompt_tokens=limits.max_prompt_tokens)

    def stream(job: Callable, chunk: Callable[[str | None, str | None], dict], first: dict | None):
        """SSE of one streamed completion: `chunk(text, finish_reason)` makes each event."""
        worker.check_capacity()  # refuse with 429 now: after the first byte, errors are events
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        task = asyncio.ensure_future(worker.run(
            job, on_text=lambda text: loop.call_soon_threadsafe(pieces.put_nowait, text), cancel=cancel))

        def finished(done: asyncio.Future) -> None:
            if not done.cancelled():
                done.exception()  # retrieved here too, in case the client left before the end
            pieces.put_nowait(None)  # after every piece: the worker hands them over before returning

        task.add_done_callback(finished)

        async def events() -> AsyncIterator[str]:
            try:
                if first is not None:
                    yield sse(first)
                while (text := await pieces.get()) is not None:
                    yield sse(chunk(text, None))
                try:
                    completion = task.result()[0]
                except (RMTScaleError, ValueError) as err:
                    yield sse(api.error_body(first_line(err), status_of(err)[1]))
                else:
                    yield sse(chunk(None, completion.finish_reason))
                yield sse("[DONE]")
            finally:
                cancel.set()  # the client may have gone: stop generating for nobody

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": reader.name, "object": "model", "created": 0,
                                            "owned_by": "rmt-scale"}]}

    @app.post("/v1/completions")
    async def completions(body: api.CompletionRequest):
        check_model(body)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not 1 <= len(prompts) <= limits.max_prompts:
            raise InputError(f"give 1 to {limits.max_prompts} prompts, not {len(prompts)}")
        if body.stream and len(prompts) != 1:
            raise InputError("streaming answers one prompt at a time")
        options = generation(body, COMPLETION_TOKENS)
        state = await memory_state(body.memory)
        job = partial(reader.complete, [state] * len(prompts), prompts, **options)
        if body.stream:
            ident, created = api.new_id("cmpl"), int(time.time())
            return stream(job, lambda text, finish: api.completion_chunk(
                ident, created, reader.name, text or "", finish), first=None)
        return api.completion_object(reader.name, await worker.run(job))

    @app.post("/v1/chat/completions")
    async def chat_completions(body: api.ChatCompletionRequest):
        check_model(body)
        body.max_tokens = body.max_tokens or body.max_completion_tokens
        options = generation(body, CHAT_TOKENS)
        prompt = reader.chat_prompt([{"role": m.role, "content": m.text()} for m in body.messages])
        state = await memory_state(body.memory)
        job = partial(reader.complete, [state], [prompt], **options)
        if body.stream:
            ident, created = api.new_id("chatcmpl"), int(time.time())
            return stream(job, lambda text, finish: api.chat_chunk(
                ident, created, reader.name, {} if text is None else {"content": text}, finish),
                first=api.chat_chunk(ident, created, reader.name, {"role": "assistant", "content": ""}, None))
        return api.chat_object(reader.name, (await worker.run(job))[0])

    @asynccontextmanager
    async def writing(memory_id: str, read: bool):
        """Take the memory's turn to be written; a read (a document) also counts against the limit."""
        nonlocal reads_under_way
        if read and reads_under_way >= limits.max_concurrent_reads:
            raise Busy(f"{reads_under_way} documents are being read already; retry later")
        reads_under_way += int(read)
        entry = locks.setdefault(memory_id, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            reads_under_way -= int(read)
            entry[1] -= 1
            if entry[1] == 0:
                del locks[memory_id]

    async def read_document(body: api.MemoryText, state):
        """Read the posted text or allowed file on from `state`; returns (state, source)."""
        if body.text is not None:
            text, name = body.text, body.name or "posted text"
        else:
            path = allowed_file(body.file, files_root, limits.max_file_bytes)
            try:
                text = await asyncio.to_thread(path.read_text, encoding="utf-8")
            except UnicodeDecodeError:
                raise InputError(f"file {body.file!r} is not UTF-8 text") from None
            name = body.name or path.relative_to(files_root.resolve()).as_posix()
        ids = await worker.run(reader.encode, text, state.tokens_read == 0)
        for start in range(0, ids.numel(), limits.read_chunk_tokens):
            state = await worker.run(reader.read_ids, ids[start : start + limits.read_chunk_tokens], state)
        return state, source_record(name, text, ids.numel())

    @app.post("/v1/memories", status_code=201)
    async def create_memory(body: api.MemoryCreate):
        memory_id = store.check_id(body.id) if body.id is not None else store.new_id()
        async with writing(memory_id, read=True):
            if store.exists(memory_id):
                raise MemoryExists(f"memory {memory_id!r} exists; append to it or delete it first")
            state, source = await read_document(body, initial)
            return await worker.run(store.save, memory_id, state, [source])

    @app.post("/v1/memories/{memory_id}/append")
    async def append_memory(memory_id: str, body: api.MemoryText):
        async with writing(store.check_id(memory_id), read=True):
            state, info = await worker.run(store.load, memory_id)
            state, source = await read_document(body, state)
            return await worker.run(store.save, memory_id, state, info.sources + [source], info.created)

    @app.get("/v1/memories")
    async def list_memories():
        return {"object": "list", "data": await asyncio.to_thread(store.list)}

    @app.get("/v1/memories/{memory_id}")
    async def get_memory(memory_id: str):
        return store.describe(memory_id, await asyncio.to_thread(store.info, memory_id))

    @app.delete("/v1/memories/{memory_id}")
    async def delete_memory(memory_id: str):
        async with writing(store.check_id(memory_id), read=False):
            store.delete(memory_id)
        return {"id": memory_id, "object": "memory.deleted", "deleted": True}

    return app


def serve(reader: MemoryReader, memory_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
          files_dir: str | Path | None = None, limits: ServerLimits | None = None,
          worker: ModelWorker | None = None) -> None:
    """Run the server until interrupted (`worker`: as for create_app)."""
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("listening on %s: the server has no authentication; anyone who can reach the "
                       "port can read and delete memories", host)
    uvicorn.run(create_app(reader, memory_dir, files_dir, limits, worker), host=host, port=port,
                log_level="info")


@contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", start_timeout_s: float = 60.0) -> Iterator[str]:
    """Serve `app` with uvicorn on a free port of `host` in a background thread (tests, benchmarks,
    notebooks); yields the base URL and stops the server on exit."""
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))  # the port is ours from here: no race with another process for it
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="rmt-scale-server")
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the server did not start within {start_timeout_s:.0f} s")
        time.sleep(0.02)
    try:
        port = sock.getsockname()[1]
        yield f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=start_timeout_s)
        sock.close()
