"""The server end to end over real loopback HTTP (httpx): memory endpoints, completions from a
memory, limits, and JSON 4xx errors that leave every memory as it was."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
import torch

from rmt_scale.serving.state import load_state
from tests.serving.conftest import TEST_LIMITS, running_server, save_adapter


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, timeout=120) as http:
        yield http


def expect_error(response: httpx.Response, status: int, text: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert text in error["message"] and "\n" not in error["message"] and "Traceback" not in response.text
    return error


def answer(reader, state, question: str, max_tokens: int = 8) -> str:
    return reader.complete([state], [reader.question_prompt(question)], max_tokens)[0].text


def test_create_get_list_ask_append_delete(client, reader, document, server_dirs):
    created = client.post("/v1/memories", json={"id": "book", "text": document, "name": "book.txt"})
    assert created.status_code == 201, created.text
    memory = created.json()
    whole = reader.read_text(document)  # the server is idle: the test may use the model
    assert memory["id"] == "book" and memory["tokens_read"] == whole.tokens_read and memory["fits_model"]
    assert memory["sources"][0]["name"] == "book.txt"
    assert client.get("/v1/memories/book").json()["tokens_read"] == whole.tokens_read
    assert "book" in [m["id"] for m in client.get("/v1/memories").json()["data"]]
    # Read in chunks of 40 tokens by the server, the state is exactly that of reading it whole.
    saved, _ = load_state(server_dirs[0] / "book.safetensors", reader.identity)
    assert torch.equal(saved.memory, whole.memory) and torch.equal(saved.tail_ids, whole.tail_ids)

    prompt = reader.question_prompt("Where is Mary?")
    response = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 8, "memory": "book"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["text"] == answer(reader, whole, "Where is Mary?")
    assert body["usage"]["completion_tokens"] >= 1 and body["object"] == "text_completion"
    # Several prompts at once against one memory.
    batch = client.post("/v1/completions", json={"prompt": [prompt, prompt], "max_tokens": 8, "memory": "book"})
    assert [c["text"] for c in batch.json()["choices"]] == [body["choices"][0]["text"]] * 2

    more = " The miller slept."
    appended = client.post("/v1/memories/book/append", json={"text": more})
    assert appended.status_code == 200, appended.text
    longer = reader.read_text(more, whole)
    assert appended.json()["tokens_read"] == longer.tokens_read > whole.tokens_read
    assert len(appended.json()["sources"]) == 2 and appended.json()["created"] == memory["created"]
    again = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 8, "memory": "book"})
    assert again.json()["choices"][0]["text"] == answer(reader, longer, "Where is Mary?")

    assert client.delete("/v1/memories/book").json() == {"id": "book", "object": "memory.deleted", "deleted": True}
    expect_error(client.get("/v1/memories/book"), 404, "no memory 'book'")
    expect_error(client.delete("/v1/memories/book"), 404, "no memory 'book'")


def test_server_side_files_only_from_the_allowed_directory(client, reader, document):
    made = client.post("/v1/memories", json={"file": "book.txt"})
    assert made.status_code == 201, made.text
    memory = made.json()
    assert memory["id"].startswith("mem-") and memory["sources"][0]["name"] == "book.txt"
    assert memory["tokens_read"] == reader.read_text(document).tokens_read
    for path in ("../secret.txt", "link.txt", "/etc/hostname", "sub/../../secret.txt"):
        expect_error(client.post("/v1/memories", json={"file": path}), 400, "outside the allowed directory")
    expect_error(client.post("/v1/memories", json={"file": "nope.txt"}), 400, "does not exist")
    before = client.get(f"/v1/memories/{memory['id']}").json()
    expect_error(client.post(f"/v1/memories/{memory['id']}/append", json={"file": "../secret.txt"}), 400, "outside")
    assert client.get(f"/v1/memories/{memory['id']}").json() == before  # the failed append changed nothing


def test_bad_requests_get_json_4xx(client, reader):
    client.post("/v1/memories", json={"id": "kept", "text": "Mary went to the kitchen."})
    kept = client.get("/v1/memories/kept").json()
    expect_error(client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"}),
                 400, "JSON")
    expect_error(client.post("/v1/completions", json={"max_tokens": 4}), 400, "prompt")
    expect_error(client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 33}), 400, "over the server's limit")
    expect_error(client.post("/v1/completions", json={"prompt": "hi", "memory": "nobody"}), 404, "no memory 'nobody'")
    expect_error(client.post("/v1/completions", json={"prompt": "hi", "model": "gpt-9"}), 404, "not served here")
    expect_error(client.post("/v1/completions", json={"prompt": "hi", "n": 2}), 400, "n:")
    expect_error(client.post("/v1/completions", json={"prompt": ["hi"] * 17}), 400, "give 1 to 16 prompts")
    expect_error(client.post("/v1/completions", json={"prompt": "word " * 300}), 400, "over the limit of 200")
    expect_error(client.post("/v1/completions", json={"prompt": "", "max_tokens": 2}), 400, "neither unread tokens")
    expect_error(client.post("/v1/chat/completions", json={"messages": []}), 400, "messages")
    expect_error(client.post("/v1/memories", json={"id": "kept", "text": "again"}), 409, "exists")
    expect_error(client.post("/v1/memories", json={"id": "../up", "text": "x"}), 400, "is not valid")
    expect_error(client.post("/v1/memories", json={"text": "x", "file": "book.txt"}), 400, "exactly one")
    expect_error(client.post("/v1/memories", json={"text": "x", "colour": "red"}), 400, "colour")
    expect_error(client.post("/v1/memories/kept/append", json={"text": "x" * (TEST_LIMITS["max_request_bytes"] + 1)}),
                 413, "over the limit")
    expect_error(client.get("/v1/nothing-here"), 404, "Not Found")
    expect_error(client.post("/v1/completions", json={"prompt": "hi", "stop": ["a"] * 5}), 400, "at most 4 stop strings")
    assert client.get("/v1/memories/kept").json() == kept  # no bad request touched it


def test_a_memory_of_another_adapter_is_refused_not_used(client, server_dirs, tmp_path, base_dir, tokenizer):
    from rmt_scale.serving import MemoryReader
    from rmt_scale.serving.state import save_state

    other = MemoryReader.load(save_adapter(tmp_path / "other", base_dir, tokenizer, seed=3))
    save_state(server_dirs[0] / "foreign.safetensors", other.read_text("Mary went home."), other.identity, [])
    listed = {m["id"]: m for m in client.get("/v1/memories").json()["data"]}
    assert listed["foreign"]["fits_model"] is False
    expect_error(client.post("/v1/completions", json={"prompt": "hi", "memory": "foreign"}), 422, "another LoRA adapter")
    expect_error(client.post("/v1/memories/foreign/append", json={"text": "more"}), 422, "another LoRA adapter")
    (server_dirs[0] / "broken.safetensors").write_bytes(b"\x00" * 12)
    listed = {m["id"]: m for m in client.get("/v1/memories").json()["data"]}
    assert "not a memory state file" in listed["broken"]["error"]
    expect_error(client.post("/v1/completions", json={"prompt": "hi", "memory": "broken"}), 422, "not a memory state")


def test_memories_persist_across_restarts(reader, tmp_path):
    from rmt_scale.serving.app import create_app

    with running_server(create_app(reader, tmp_path / "memories")) as url:
        assert httpx.post(f"{url}/v1/memories", json={"id": "diary", "text": "Dear diary, the mill."},
                          timeout=60).status_code == 201
        first = httpx.post(f"{url}/v1/completions", json={"prompt": " It", "memory": "diary", "max_tokens": 5},
                           timeout=60).json()["choices"][0]["text"]
    with running_server(create_app(reader, tmp_path / "memories")) as url:
        assert [m["id"] for m in httpx.get(f"{url}/v1/memories", timeout=60).json()["data"]] == ["diary"]
        again = httpx.post(f"{url}/v1/completions", json={"prompt": " It", "memory": "diary", "max_tokens": 5},
                           timeout=60).json()["choices"][0]["text"]
    assert again == first
    assert sorted(p.name for p in (tmp_path / "memories").iterdir()) == ["diary.safetensors"]


def test_reads_past_the_limit_get_429_and_do_not_disturb_the_one_under_way(adapter_dir, tmp_path, monkeypatch):
    from rmt_scale.serving import MemoryReader
    from rmt_scale.serving.app import create_app
    from rmt_scale.serving.limits import ServerLimits

    reader = MemoryReader.load(adapter_dir)  # its own, so that the test may slow its reading down
    entered, release = threading.Event(), threading.Event()
    read_ids = reader.read_ids

    def slow_read_ids(*args, **kwargs):
        entered.set()
        assert release.wait(60), "the test never released the read"
        return read_ids(*args, **kwargs)

    monkeypatch.setattr(reader, "read_ids", slow_read_ids)
    app = create_app(reader, tmp_path / "memories", limits=ServerLimits(max_concurrent_reads=1))
    with running_server(app) as url:
        first: dict = {}
        thread = threading.Thread(target=lambda: first.update(response=httpx.post(
            f"{url}/v1/memories", json={"id": "slow", "text": "Mary went to the kitchen."}, timeout=120)))
        thread.start()
        assert entered.wait(60), "the first read never started"
        busy = httpx.post(f"{url}/v1/memories", json={"id": "second", "text": "John went home."}, timeout=60)
        expect_error(busy, 429, "being read already")
        assert busy.headers["retry-after"] == "1"
        release.set()
        thread.join(timeout=120)
        assert first["response"].status_code == 201, first["response"].text
        assert [m["id"] for m in httpx.get(f"{url}/v1/memories", timeout=60).json()["data"]] == ["slow"]


def test_the_worker_queue_is_bounded():
    from rmt_scale.serving.limits import Busy, ModelWorker

    async def scenario():
        worker = ModelWorker(max_waiting=1)
        release = threading.Event()
        first = asyncio.ensure_future(worker.run(release.wait, 30))
        await asyncio.sleep(0)
        with pytest.raises(Busy, match="retry later"):
            await worker.run(lambda: None)
        release.set()
        assert await first is True
        assert await worker.run(lambda: 7) == 7  # room again once the first job is done
        worker.shutdown()

    asyncio.run(scenario())
