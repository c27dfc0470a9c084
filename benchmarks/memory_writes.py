"""What a soft-token memory says: the tokens each write slot emits on held-out qa1 samples.

Under `rmt.memory_norm: soft_token` every write slot emits a next-token distribution and the next
segment reads the embedding mixture it gives, so the memory can be read as words. This benchmark
reads held-out BABILong qa1 samples (bAbI validation stories in a book never used in training, the
facts before the last segment) with each trained adapter and reports, for the memory written just
before the last segment:

- entropy: the mean entropy of the write distributions (nats); near 0, every slot is one token;
- input dependence: the share of slots whose top token changes between samples; 0 means the
  memory is the same for every input (collapsed), whatever the story said;
- place share: the write mass on qa1's six place words;
- answer first: how often the answer is the place with the most mass in the memory;
- last place first: how often the last place the story mentions has the most mass (the answer
  only when the question is about whoever moved last: 0.54 of qa1's questions);
- the top token of each slot for the first sample.

    python -m benchmarks memory-writes --adapter RUN/final [RUN2/final ...] [--samples 64]

Needs the bAbI files and books in ../shared/data (a developer benchmark). Writes a section of
docs/results.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from benchmarks.report import machine_description, markdown_table, write_section

PLACES = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
FACT = re.compile(r"\b(?:Mary|John|Sandra|Daniel) (?:\w+ )+?to the (" + "|".join(PLACES) + r")\.")
BABI_DIR = Path("../shared/data/babi/en-10k")
HELD_OUT_BOOK = Path("../shared/data/noise/pg74_adventures_of_tom_sawyer.txt")


def place_token_ids(tokenizer) -> list[int]:
    """The first token of each place word as it follows a space (how the story spells it)."""
    return [tokenizer(" " + place, add_special_tokens=False)["input_ids"][0] for place in PLACES]


@torch.no_grad()
def write_distributions(model, input_ids: torch.Tensor, segments: int) -> torch.Tensor:
    """The write distributions (M, V) after segment `segments - 1` of one sample (1, T)."""
    cell = model.cell
    size = model.config.segment_size
    memory = model.initial_memory(1)
    for index in range(segments - 1):
        _, written = cell.hidden_states(memory, input_ids[:, index * size : (index + 1) * size])
        probabilities = cell.write_distribution(written)[0]
        memory = cell.scale_written(written)
    return probabilities


def last_place(context: str) -> str:
    """The place of the last fact in a qa1 context ("<person> <verb> [back] to the <place>.")."""
    facts = FACT.findall(context)
    return facts[-1] if facts else ""


def measure(adapter: str, segments: int, samples: int) -> dict:
    from rmt_scale.data import babilong_dataset
    from rmt_scale.evaluation.models import load_eval_model
    from rmt_scale.training.data import ANSWER_TOKENS

    loaded = load_eval_model(adapter, dtype="float32", device="cpu")
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    if getattr(model, "config", None) is None or getattr(model.config, "memory_norm", None) != "soft_token":
        raise SystemExit(f"error: {adapter} is not an adapter that writes soft tokens (rmt.memory_norm: "
                         "soft_token); memory-writes reads soft-token memories only")
    size = model.config.segment_size
    data = babilong_dataset("qa1", segments * size - ANSWER_TOKENS, samples, tokenizer, seed=13, babi_dir=BABI_DIR,
                            noise_files=[str(HELD_OUT_BOOK)], split="validation", min_fact_gap=size)
    places = torch.tensor(place_token_ids(tokenizer))
    entropy, place_share, answer_first, last_first, tops = [], [], 0, 0, []
    for row in data:
        ids = torch.tensor([row["input_ids"]])
        p = write_distributions(model, ids, segments)  # (M, V)
        entropy.append(float(-(p.clamp_min(1e-12).log() * p).sum(-1).mean()))
        mass = p[:, places].sum(0)  # (6,)
        place_share.append(float(mass.sum() / p.shape[0]))
        first = PLACES[int(mass.argmax())]
        answer_first += first == row["answer"]
        last_first += first == last_place(tokenizer.decode(row["input_ids"][: row["prompt_length"]]))
        tops.append(p.argmax(-1))
    tops = torch.stack(tops)  # (samples, M)
    dependence = float((tops != tops[:1]).any(0).float().mean())
    words = [tokenizer.decode([int(t)]).strip() or repr(tokenizer.decode([int(t)])) for t in tops[0]]
    n = len(data)
    return {"adapter": adapter, "segments": segments, "samples": n,
            "entropy": sum(entropy) / n, "input_dependence": dependence,
            "place_share": sum(place_share) / n, "answer_first": answer_first / n,
            "last_place_first": last_first / n, "first_sample_tokens": words}


def memory_writes(doc: Path, adapters: list[str], labels: list[str] | None, segments: int, samples: int) -> None:
    if not adapters:
        raise SystemExit("error: memory-writes needs --adapter (one or more trained soft-token adapters)")
    labels = labels or adapters
    if len(labels) != len(adapters):
        raise SystemExit(f"error: --labels gives {len(labels)} names for {len(adapters)} adapters")
    results = [measure(adapter, segments, samples) for adapter in adapters]
    rows = [[label, f"{r['entropy']:.2f}", f"{r['input_dependence']:.2f}", f"{r['place_share']:.2f}",
             f"{r['answer_first']:.2f}", f"{r['last_place_first']:.2f}", " ".join(r["first_sample_tokens"])]
            for label, r in zip(labels, results, strict=True)]
    section = f"""## What the soft-token memory says

`python -m benchmarks memory-writes --adapter ADAPTER ... --segments {segments} --samples {samples}`
({machine_description()}). The memory each adapter writes just before the last of {segments}
segments, on {results[0]['samples']} held-out qa1 samples (validation stories in a book never
trained on, every fact before the last segment), read as words: entropy of the write
distributions (nats; 0: every slot is a single token), the share of slots whose top token changes
between samples (0: the memory is the same whatever the story said), the write mass on the six
place words, how often the answer / the last place the story names has the most mass, and each
slot's top token for the first sample.

{markdown_table(["adapter", "entropy", "input dependence", "place share", "answer first", "last place first",
                 "slots 0-15, first sample"], rows)}
"""
    write_section(doc, "memory-writes", section)
    print(section)
