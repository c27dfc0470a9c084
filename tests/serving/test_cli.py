"""`rmt-scale read` and `rmt-scale ask`: a document read into a state file, appended to, and asked."""

from __future__ import annotations

import io

import torch

from rmt_scale.cli.main import main
from rmt_scale.serving.state import load_state


def answers_of(reader, state, questions, max_new_tokens=6):
    prompts = [reader.question_prompt(q) for q in questions]
    return [" ".join(c.text.split()) for c in reader.complete([state] * len(prompts), prompts, max_new_tokens)]


def test_read_then_ask(tmp_path, capsys, adapter_dir, reader, document):
    book = tmp_path / "book.txt"
    book.write_text(document)
    state_file = tmp_path / "book.state"
    assert main(["read", "--model", str(adapter_dir), "--input", str(book), "--out", str(state_file)]) == 0
    out, err = capsys.readouterr()
    whole = reader.read_text(document)
    assert f"read {whole.tokens_read:,} tokens" in out
    assert "tok/s" in err  # the progress bar, on stderr
    state, info = load_state(state_file, reader.identity)
    assert torch.equal(state.memory, whole.memory) and info.sources[0]["name"] == "book.txt"

    questions = ["Where is Mary?", "Who wrote a letter?", "What did the miller count?"]
    assert main(["ask", "--model", str(adapter_dir), "--memory", str(state_file), "--max-new-tokens", "6",
                 "--batch-size", "2", *questions]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == answers_of(reader, whole, questions)

    listed = tmp_path / "questions.txt"
    listed.write_text("\n".join(questions[:2]) + "\n\n")
    assert main(["ask", "--model", str(adapter_dir), "--memory", str(state_file), "--max-new-tokens", "6",
                 "--questions", str(listed)]) == 0
    assert capsys.readouterr().out.splitlines() == lines[:2]


def test_read_appends_and_refuses_to_overwrite(tmp_path, capsys, monkeypatch, adapter_dir, reader, document):
    cut = document.index(" ", len(document) // 2)  # at a space before a word: no token spans the cut
    (tmp_path / "part1.txt").write_text(document[:cut])
    (tmp_path / "part2.txt").write_text(document[cut:])
    first, second = tmp_path / "one.state", tmp_path / "two.state"
    command = ["read", "--model", str(adapter_dir), "--quiet"]
    assert main([*command, "--input", str(tmp_path / "part1.txt"), "--out", str(first)]) == 0
    assert main([*command, "--input", str(tmp_path / "part1.txt"), "--out", str(first)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main([*command, "--input", str(tmp_path / "part2.txt"), "--append", str(first), "--out", str(second)]) == 0
    appended, info = load_state(second, reader.identity)
    whole = reader.read_text(document)
    assert torch.equal(appended.memory, whole.memory) and torch.equal(appended.tail_ids, whole.tail_ids)
    assert [s["name"] for s in info.sources] == ["part1.txt", "part2.txt"]

    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("Where is Mary?\n"))
    assert main(["ask", "--model", str(adapter_dir), "--memory", str(second), "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out.splitlines() == answers_of(reader, whole, ["Where is Mary?"])


def test_user_errors_are_one_line(tmp_path, capsys, adapter_dir, base_dir, tokenizer, document):
    from tests.serving.conftest import save_adapter

    (tmp_path / "doc.txt").write_text(document)
    state_file = tmp_path / "doc.state"
    assert main(["read", "--model", str(adapter_dir), "--input", str(tmp_path / "doc.txt"), "--out", str(state_file),
                 "--quiet"]) == 0
    other = save_adapter(tmp_path / "other", base_dir, tokenizer, seed=4)
    cases = [
        (["ask", "--model", str(other), "--memory", str(state_file), "hi"], "another LoRA adapter"),
        (["ask", "--model", str(adapter_dir), "--memory", str(tmp_path / "none.state"), "hi"], "no such memory state"),
        (["read", "--model", str(adapter_dir), "--input", str(tmp_path / "none.txt"), "--out", str(tmp_path / "x")],
         "no such input file"),
        (["read", "--model", str(other), "--input", str(tmp_path / "doc.txt"), "--append", str(state_file),
          "--out", str(tmp_path / "y")], "another LoRA adapter"),
    ]
    capsys.readouterr()
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and message in err[-1], err
    assert not (tmp_path / "y").exists()


def test_serve_starts_on_loopback_and_stops_on_interrupt(tmp_path, adapter_dir):
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as probe:  # a port that was free a moment ago; the server binds it next
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "rmt_scale.cli.main", "serve", "--model", str(adapter_dir), "--port", str(port),
         "--memory-dir", str(tmp_path / "memories")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, models = time.monotonic() + 120, None
        while models is None and time.monotonic() < deadline and server.poll() is None:
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()
            except httpx.TransportError:
                time.sleep(0.2)
        assert models is not None, server.stdout.read() if server.poll() is not None else "not up in 120 s"
        assert models["data"][0]["id"] == "adapter"
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"prompt": "Mary went", "max_tokens": 3},
                            timeout=60)
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] >= 1
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=60)
    assert server.returncode in (0, 130), server.stdout.read()


def test_serve_refuses_bad_limits_before_loading(capsys, adapter_dir):
    assert main(["serve", "--model", str(adapter_dir), "--max-request-bytes", "0"]) == 2
    assert "max_request_bytes must be a positive integer" in capsys.readouterr().err
