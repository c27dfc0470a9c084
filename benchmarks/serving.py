"""Serving benchmarks: answering from a saved memory state against reading the document again, and
the HTTP server answering from saved memories under concurrent clients (loopback only).

    python -m benchmarks serving                     # the default checkpoint (bf16) if fetched
    python -m benchmarks serving --model random      # a random Llama: the whole run in seconds

The memory model is the base wrapped with fresh memory (`num_mem_tokens=16`, `segment_size=512`):
timings do not depend on what the memory has learned.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch
from transformers.generation.streamers import BaseStreamer

from benchmarks.report import machine_description, markdown_table, write_section

logger = logging.getLogger(__name__)

MILLION = 1 << 20
QUESTIONS = ("Where did the fox go?", "What was the weather like?", "Which bird sang at dawn?",
             "What lay beyond the hills?")


class FirstTokenClock(BaseStreamer):
    """Notes when generate hands over its first new token (its first `put` is the prompt)."""

    def __init__(self):
        self.puts, self.first_token_at = 0, None

    def put(self, value) -> None:
        self.puts += 1
        if self.puts == 2:
            self.first_token_at = time.perf_counter()

    def end(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()


def build_adapter(model: str | None, out: Path) -> tuple[Path, str, str]:
    """Save base + fresh memory as an adapter directory; returns (directory, description, dtype)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rmt_scale import RecurrentMemoryModel, RMTConfig
    from rmt_scale.export.default_model import COMPLETE_MARKER, default_model_dir

    default = default_model_dir()
    if model == "random" or (model is None and not (default / COMPLETE_MARKER).is_file()):
        tokenizer = AutoTokenizer.from_pretrained(default, trust_remote_code=False) if (default / COMPLETE_MARKER).is_file() \
            else filler_tokenizer()
        torch.manual_seed(0)
        base = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512,
                                            num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                            max_position_embeddings=2048))
        base.save_pretrained(out / "base")
        tokenizer.save_pretrained(out / "base")
        base_dir, described, dtype = out / "base", "random Llama (hidden 256, 4 layers), float32", "float32"
    else:
        base_dir = Path(model) if model else default
        described = (f"checkpoint `{base_dir.name}`" if model else "SmolLM2-135M-Instruct (the default checkpoint)")
        described, dtype = f"{described}, bfloat16", "bfloat16"
        tokenizer = AutoTokenizer.from_pretrained(base_dir, trust_remote_code=False)
        base = AutoModelForCausalLM.from_pretrained(base_dir, trust_remote_code=False)
    wrapped = RecurrentMemoryModel.wrap(base, RMTConfig(num_mem_tokens=16, segment_size=512))
    wrapped.save_pretrained(out / "adapter", base_model_name_or_path=str(base_dir.resolve()),
                            extra_files=lambda target: tokenizer.save_pretrained(str(target)))
    return out / "adapter", described, dtype


def filler_tokenizer():
    """A byte-level BPE of 4096 tokens trained on filler sentences, for a random model without downloads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=["<eos>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(filler_text(2000).splitlines(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>")


def filler_text(sentences: int, seed: int = 0) -> str:
    from rmt_scale.data import FillerNoise

    rng, filler = random.Random(seed), FillerNoise()
    return "\n".join(filler.sentence(rng) for _ in range(sentences))


def document_ids(reader, tokens: int) -> torch.Tensor:
    """Exactly `tokens` ids of filler prose (a stand-in for a book)."""
    sentences = max(64, tokens // 8)
    while True:
        ids = reader.encode(filler_text(sentences), document_start=True)
        if ids.numel() >= tokens:
            return ids[:tokens]
        sentences *= 2


def timed_answer(generate) -> tuple[float, float, torch.Tensor]:
    """(seconds to the first new token, seconds to the whole answer, the answer's ids)."""
    clock, start = FirstTokenClock(), time.perf_counter()
    tokens = generate(clock)
    return clock.first_token_at - start, time.perf_counter() - start, tokens


def state_against_rereading(reader, work: Path, tokens: int, new_tokens: int, repeats: int) -> dict:
    from rmt_scale.serving.state import load_state, save_state

    ids = document_ids(reader, tokens)
    prompt = reader.encode(reader.question_prompt(QUESTIONS[0]), document_start=False)
    # Warm-up, untimed: the first forward and the first generate pay one-time setup costs.
    reader.model.generate(ids[: 2 * reader.model.config.segment_size].unsqueeze(0), max_new_tokens=2)
    load_average = os.getloadavg()[0]
    start = time.perf_counter()
    state = reader.read_ids(ids)
    read_s = time.perf_counter() - start
    path = work / "book.safetensors"
    save_state(path, state, reader.identity, [{"name": "filler", "sha256": "", "tokens": tokens}])
    logger.info("read %d tokens in %.1f s", tokens, read_s)

    def from_state(clock):
        loaded, _ = load_state(path, reader.identity)  # from disk every time, checks included
        return reader.model.generate_from_states([loaded], [prompt], new_tokens, streamer=clock)[0]

    runs = [timed_answer(from_state) for _ in range(repeats)]
    reread = timed_answer(lambda clock: reader.model.generate(
        torch.cat([ids, prompt]).unsqueeze(0), max_new_tokens=new_tokens, streamer=clock)[0])
    logger.info("answer from state %.3f s, by reading again %.1f s", statistics.median(r[1] for r in runs), reread[1])
    return {"tokens": tokens, "read_s": read_s, "load_average": load_average, "state_bytes": path.stat().st_size, "path": path,
            "state_first": statistics.median(r[0] for r in runs), "state_answer": statistics.median(r[1] for r in runs),
            "reread_first": reread[0], "reread_answer": reread[1], "answer_tokens": int(runs[0][2].numel()),
            "same_answer": all(torch.equal(r[2], reread[2]) for r in runs)}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def load_test(reader, worker, state_path: Path, work: Path, runs: tuple[tuple[int, int], ...], limit_s: float,
              new_tokens: int) -> list[dict]:
    """For each (clients, requests) of `runs`: that many client threads ask the server questions
    about the saved memory until `requests` are answered or `limit_s` has passed."""
    import httpx

    from rmt_scale.serving.app import create_app, serve_in_thread

    (work / "memories").mkdir()
    shutil.copy(state_path, work / "memories" / "book.safetensors")
    rows = []
    with serve_in_thread(create_app(reader, work / "memories", worker=worker)) as url:
        httpx.post(f"{url}/v1/completions", json={"prompt": "Hello", "max_tokens": 2}, timeout=limit_s)  # warm-up
        for clients, requests in runs:
            rows.append(hammer(url, reader, clients, requests, limit_s, new_tokens))
            logger.info("%s", rows[-1])
    return rows


def hammer(url: str, reader, clients: int, requests: int, limit_s: float, new_tokens: int) -> dict:
    import httpx

    latencies, failures, lock = [], [], threading.Lock()
    issued, deadline = 0, time.monotonic() + limit_s

    def client(index: int) -> None:
        nonlocal issued
        with httpx.Client(base_url=url, timeout=limit_s) as http:
            while time.monotonic() < deadline:
                with lock:
                    if issued >= requests:
                        return
                    issued += 1
                    question = QUESTIONS[(index + issued) % len(QUESTIONS)]
                start = time.perf_counter()
                response = http.post("/v1/completions", json={
                    "prompt": reader.question_prompt(question), "max_tokens": new_tokens, "memory": "book"})
                with lock:
                    (latencies if response.status_code == 200 else failures).append(time.perf_counter() - start)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    load_average = os.getloadavg()[0]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=limit_s + 60)
    wall = time.perf_counter() - start
    return {"clients": clients, "load_average": load_average, "answered": len(latencies), "failed": len(failures), "wall_s": wall,
            "rps": len(latencies) / wall, "p50": percentile(latencies, 0.50), "p99": percentile(latencies, 0.99)}


def serving(doc: Path, model: str | None = None, tokens: int | None = None, clients: int = 8,
            requests: int = 64, limit_s: float = 300.0, new_tokens: int = 16, repeats: int = 5) -> dict:
    from rmt_scale.serving import MemoryReader
    from rmt_scale.serving.limits import ModelWorker

    # Every torch call runs in the server's one model thread, as `rmt-scale serve` does: a second
    # thread running torch would slow both (see ModelWorker).
    worker = ModelWorker(max_waiting=64)
    with tempfile.TemporaryDirectory(prefix="rmt-serving-bench-") as tmp:
        work = Path(tmp)
        adapter, described, dtype = worker.call(build_adapter, model, work)
        tokens = tokens or (16_384 if dtype == "float32" else 65_536)
        reader = worker.call(MemoryReader.load, adapter, dtype=dtype)
        single = worker.call(state_against_rereading, reader, work, tokens, new_tokens, repeats)
        load = load_test(reader, worker, single["path"], work, ((1, requests // 4), (clients, requests)),
                         limit_s, new_tokens)
    write_section(doc, "serving", report(single, load, described, new_tokens, repeats, limit_s))
    return {"single": single, "load": load}


def report(single: dict, load: list[dict], described: str, new_tokens: int, repeats: int, limit_s: float) -> str:
    # Reading is timed twice (reading into the state, and inside `generate` again); the faster one
    # is the rate projected to 1M, which keeps the projected speed-up on the low side.
    per_token = min(single["read_s"], single["reread_first"]) / single["tokens"]
    ratio_first = single["reread_first"] / single["state_first"]
    ratio_answer = single["reread_answer"] / single["state_answer"]
    projected_first = (per_token * MILLION + single["state_first"]) / single["state_first"]
    projected_answer = (per_token * MILLION + single["state_answer"]) / single["state_answer"]
    table = markdown_table(
        ["", "read the document again", "from the saved state", "speed-up"],
        [["first token (s)", f"{single['reread_first']:.2f}", f"{single['state_first']:.3f}", f"{ratio_first:,.0f}x"],
         [f"whole answer, {single['answer_tokens']} tokens (s)", f"{single['reread_answer']:.2f}",
          f"{single['state_answer']:.3f}", f"{ratio_answer:,.0f}x"],
         ["projected at 1,048,576 tokens", f"{per_token * MILLION:,.0f} + answer",
          "same as above", f"{projected_first:,.0f}x first token, {projected_answer:,.0f}x answer"]])
    load_table = markdown_table(
        ["clients", "load average at start", "answered", "failed", "wall time (s)", "requests/s",
         "p50 latency (s)", "p99 latency (s)"],
        [[run["clients"], f"{run['load_average']:.1f}", run["answered"], run["failed"], f"{run['wall_s']:.1f}", f"{run['rps']:.2f}",
          f"{run['p50']:.2f}", f"{run['p99']:.2f}"] for run in load])
    target = "met" if projected_first >= 1000 else "not met"
    return f"""## Serving: answering from a saved memory state

Command: `python -m benchmarks serving`. Machine: {machine_description()}.

Base: {described}, wrapped with fresh memory (`num_mem_tokens=16`, `segment_size=512`).
The document is {single['tokens']:,} tokens of filler prose, read into a memory state of
{single['state_bytes']:,} bytes on disk in {single['read_s']:.1f} s. "From the saved state" loads and
checks the state file, reads its unread tail with the question, and answers (median of {repeats});
"read the document again" is `generate` over document + question (once); all in one process,
after an untimed warm-up. Greedy, at most
{new_tokens} new tokens; both gave the same tokens: {"yes" if single["same_answer"] else "NO"}.

A 1M-token document is not read here: it would take about {per_token * MILLION / 60:.0f} minutes at
the faster of the two measured reading rates ({1 / per_token:,.0f} tokens/s). Reading costs the same
per token at any length (see "Long inputs"), so the 1M row projects that rate. The machine is
shared with other work (load average {single['load_average']:.1f} on {os.cpu_count()} cores when
reading began), so single timings here vary by up to 2x between runs.

{table}

Target: answering from the state at least 1000x faster than reading a 1M-token document again
({target} for the first token, projected). The answer's own decoding costs the same either way, so
the whole-answer ratio is capped by it.

### Server: `ask` on a saved memory, {load[-1]['clients']} concurrent clients

`rmt-scale serve` app on 127.0.0.1 (uvicorn in-process), the state above saved as a memory; client
threads post `/v1/completions` naming it (`max_tokens={new_tokens}`, four questions in turn) until
their requests are done, bounded to {limit_s:.0f} s per row. One client shows the service time of a
request over HTTP; with {load[-1]['clients']}, requests queue for the one model worker thread, so
requests/s stays about 1 / service time and a request's latency includes its wait behind the others.

{load_table}
"""
