"""Does a pretrained base learn to carry a fact through its memory? Key recall across one transition.

The qa1 runs of docs/results.md answer no better with their memory than without it. This benchmark
asks the smallest question behind that: can the base learn to carry two tokens from segment 1 to
the end of segment 2, where nothing but the memory holds them? Samples are the built-in key-recall
task (`rmt_scale.data.synthetic`) with its ids mapped onto ordinary words, so the pretrained model
reads and writes tokens it knows: `Key: red blue <filler> ... Answer red blue`. Every 25 steps it
records validation loss and accuracy (chance: 1/8) and the *key sensitivity* of the written memory:
|w(sample) - w(same sample, other key)| / |w(sample)|, where w is the memory segment 1 writes. A
memory that carries the key must keep that above zero; one that has collapsed to a key-independent
state drives it toward zero, and no readout can then recover the key. For the untrained base it
also records whether the key can be read from the written memory at all (a linear probe) and
whether the base itself reads it (against the key's own embeddings put in the memory slots).

    python -m benchmarks memory-pathway --model SmolLM2-135M-Instruct [--steps 100] [--only lora ...]
        [--adapter TRAINED_QA1_ADAPTER ...]

A plain loop (AdamW, fp32 trainable weights over a bf16 base, warmup then cosine, clip 1.0), so
each variant changes exactly one thing. Writes a section of docs/results.md and a PNG.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.report import (
    load_runs,
    machine_description,
    markdown_table,
    save_run,
    write_section,
)

KEY_WORDS = (" red", " blue", " green", " black", " white", " pink", " brown", " gray")
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SEGMENT, SEGMENTS, MEMORY, BATCH, VALID = 32, 2, 16, 8, 64


@dataclass(frozen=True)
class Variant:
    key: str  # what --only names
    name: str
    finetune: str = "lora"  # "lora": LoRA r8 on every linear layer; "full": every weight
    lr: float = 1e-3
    constant_filler: bool = False  # filler is one repeated word: the key is all that varies
    memory_norm: str = "embedding"  # RMTConfig.memory_norm


VARIANTS = (
    Variant("lora", "LoRA, lr 1e-3 (the qa1 runs' setting)"),
    Variant("lora-constant", "LoRA, lr 1e-3, constant filler", constant_filler=True),
    Variant("lora-2e-4", "LoRA, lr 2e-4", lr=2e-4),
    Variant("full", "full fine-tuning, lr 5e-5", finetune="full", lr=5e-5),
    Variant("lora-soft-token", "LoRA, lr 1e-3, memory_norm soft_token", memory_norm="soft_token"),
)
MARKS = (0, 25, 50, 100, 200, 400, 800)


class WordKeyRecall:
    """Key-recall batches whose marker and key ids are mapped onto the tokenizer's words."""

    def __init__(self, tokenizer, vocab_size: int, constant_filler: bool, seed: int):
        from rmt_scale.data.synthetic import BOS, QUERY, KeyRecallDataset

        self.dataset = KeyRecallDataset(1 << 20, SEGMENT, SEGMENTS, vocab_size, key_vocab=len(KEY_WORDS), seed=seed)
        ids = [tokenizer.encode(word, add_special_tokens=False) for word in KEY_WORDS]
        if any(len(word) != 1 for word in ids):
            raise SystemExit(f"the tokenizer splits a key word: {ids}; this benchmark needs one token per word")
        self.key_ids = torch.tensor([word for (word,) in ids])
        self.filler = tokenizer.encode(" the", add_special_tokens=False)[0]
        markers = {BOS: tokenizer.encode("Key:", add_special_tokens=False)[0],
                   QUERY: tokenizer.encode(" Answer", add_special_tokens=False)[0]}
        markers.update({4 + index: word for index, (word,) in enumerate(ids)})
        lookup = torch.arange(vocab_size)
        for word in markers.values():
            lookup[word] = self.filler  # a random filler id equal to a marker's word reads " the"
        for index, word in markers.items():
            lookup[index] = word
        self.lookup, self.constant_filler = lookup, constant_filler

    def _words(self, ids: torch.Tensor) -> torch.Tensor:
        words = torch.where(ids < 0, ids, self.lookup[ids.clamp(min=0)])
        if self.constant_filler:
            words = torch.where(ids >= 4 + len(KEY_WORDS), torch.full_like(words, self.filler), words)
        return words

    def batch(self, start: int, count: int, shift_key: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, labels) of samples start .. start+count-1; shift_key > 0 swaps every key token for
        another one (the same sample with a different key)."""
        items = [self.dataset[i] for i in range(start, start + count)]
        ids = torch.stack([item["input_ids"] for item in items])
        labels = torch.stack([item["labels"] for item in items])
        if shift_key:
            ids, labels = (torch.where((x >= 4) & (x < 4 + len(KEY_WORDS)), 4 + (x - 4 + shift_key) % len(KEY_WORDS), x)
                           for x in (ids, labels))
        return self._words(ids), self._words(labels)


def build(model_path: str, variant: Variant):
    from rmt_scale import RecurrentMemoryModel, RMTConfig
    from rmt_scale.model.loading import load_causal_lm, resolve_model_dir

    torch.manual_seed(0)
    base = load_causal_lm(resolve_model_dir(model_path), dtype=torch.bfloat16)
    if variant.finetune == "lora":
        from peft import LoraConfig, get_peft_model

        base = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=ALL_LINEAR))
    # The qa1 runs' memory settings: a sink token first, the variant's write (memory_norm).
    model = RecurrentMemoryModel.wrap(base, RMTConfig(num_mem_tokens=MEMORY, segment_size=SEGMENT,
                                                      segment_checkpointing=False, memory_norm=variant.memory_norm,
                                                      sink_token=0))
    for parameter in model.parameters():  # fp32 weights where they train, as DeepSpeed's bf16 mode
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    return model


def key_recall_data(model, model_path: str, constant_filler: bool, seeds: tuple[int, ...]) -> list[WordKeyRecall]:
    """One WordKeyRecall per seed, on `model_path`'s tokenizer and `model`'s vocabulary."""
    from rmt_scale.model.loading import load_tokenizer, resolve_model_dir

    tokenizer = load_tokenizer(resolve_model_dir(model_path))
    vocab = model.base.get_input_embeddings().weight.shape[0]
    return [WordKeyRecall(tokenizer, vocab, constant_filler, seed=seed) for seed in seeds]


def written_memory(model, segment_ids: torch.Tensor) -> torch.Tensor:
    """The memory (b, M, D), in fp32, that one segment writes when read after the initial memory."""
    return model.cell(model.initial_memory(len(segment_ids)), segment_ids)[1].float()


def relative_change(written: torch.Tensor, other: torch.Tensor) -> float:
    return ((written - other).norm() / written.norm()).item()


@torch.no_grad()
def key_sensitivity(model, data: WordKeyRecall) -> float:
    """|w(x) - w(x with another key)| / |w(x)| over 16 validation samples, w = segment 1's write."""
    ids, _ = data.batch(0, 16)
    other, _ = data.batch(0, 16, shift_key=3)
    return relative_change(written_memory(model, ids[:, :SEGMENT]), written_memory(model, other[:, :SEGMENT]))


@torch.no_grad()
def validate(model, data: WordKeyRecall) -> tuple[float, float]:
    from rmt_scale.data.synthetic import key_recall_accuracy

    ids, labels = data.batch(0, VALID)
    output = model(ids, labels=labels)
    return output.loss.item(), key_recall_accuracy(output.predictions, labels)


def train(model_path: str, variant: Variant, steps: int, every: int = 25) -> dict:
    model = build(model_path, variant).train()
    train_data, valid_data = key_recall_data(model, model_path, variant.constant_filler, seeds=(1, 999))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=variant.lr, weight_decay=0.0)
    trace, start = [], time.perf_counter()
    for step in range(steps + 1):
        if step % every == 0:
            model.eval()
            loss, accuracy = validate(model, valid_data)
            trace.append({"step": step, "loss": loss, "accuracy": accuracy,
                          "sensitivity": key_sensitivity(model, valid_data)})
            model.train()
            print(f"{variant.name}: {trace[-1]}", flush=True)
        if step == steps:
            break
        warmup, progress = min(1.0, (step + 1) / 20), step / steps
        for group in optimizer.param_groups:
            group["lr"] = variant.lr * warmup * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))
        ids, labels = train_data.batch(step * BATCH, BATCH)
        loss = model(ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
    return {"variant": asdict(variant), "steps": steps, "trace": trace,
            "seconds_per_step": (time.perf_counter() - start) / max(1, steps)}


@torch.no_grad()
def written_features(model, data: WordKeyRecall, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The memory segment 1 writes, flattened (count, M*D), and each sample's first key word."""
    features, keys = [], []
    for start in range(0, count, 64):
        ids, _ = data.batch(start, min(64, count - start))
        features.append(written_memory(model, ids[:, :SEGMENT]).flatten(1))
        keys.append(ids[:, 1])
    return torch.cat(features), torch.cat(keys)


def linear_probe(features: torch.Tensor, keys: torch.Tensor, train: int) -> float:
    """Held-out accuracy of a logistic-regression probe (the first `train` rows fit it): is the
    key in the written memory, in a form a linear readout can take?"""
    classes = keys.unique()
    target = torch.searchsorted(classes, keys)
    mean, std = features[:train].mean(0), features[:train].std(0) + 1e-6
    x = (features - mean) / std
    torch.manual_seed(0)
    weight = torch.zeros(x.shape[1], len(classes), requires_grad=True)
    bias = torch.zeros(len(classes), requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=1e-2)
    for _ in range(300):
        loss = torch.nn.functional.cross_entropy(x[:train] @ weight + bias, target[:train]) + 1e-3 * weight.pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return ((x[train:] @ weight + bias).argmax(1) == target[train:]).float().mean().item()


@torch.no_grad()
def readout_accuracy(model, data: WordKeyRecall, memory: str, count: int = 128) -> float:
    """Of the 8 key words, how often the untrained base ranks the right one first at the answer,
    reading segment 2 after `memory`: "initial" (no key anywhere), "written" (segment 1's write), or
    "embeddings" (the initial memory with slots 0-2 replaced by the embeddings of `Key: w1 w2`)."""
    ids, labels = data.batch(0, count)
    read = model.initial_memory(count)
    if memory == "written":
        read = written_memory(model, ids[:, :SEGMENT]).to(read.dtype)
    elif memory == "embeddings":
        read = read.clone()
        read[:, :3] = model.base.get_input_embeddings()(ids[:, :3]).to(read.dtype)
    hidden, _ = model.cell(read, ids[:, SEGMENT:])
    targets = labels[:, SEGMENT + 1:]
    scored = targets != -100
    best = model.cell.lm_head(hidden[:, :-1][scored]).float()[:, data.key_ids].argmax(-1)
    return (data.key_ids[best] == targets[scored]).float().mean().item()


def fresh_rows(model_path: str) -> list[list[str]]:
    """What the untrained base does with its memory: probe and readout accuracies."""
    model = build(model_path, VARIANTS[0]).eval()  # LoRA's B starts at zero: this is the base
    rows = []
    for constant in (False, True):
        (data,) = key_recall_data(model, model_path, constant, seeds=(5,))
        probe = linear_probe(*written_features(model, data, 1280), train=1024)
        readouts = [readout_accuracy(model, data, memory) for memory in ("initial", "written", "embeddings")]
        rows.append(["constant" if constant else "random", f"{probe:.2f}", *(f"{r:.2f}" for r in readouts)])
    return rows


QA1_PLACES = ("kitchen", "garden", "bathroom", "bedroom", "hallway", "office")


def place_segments(tokenizer, segment_size: int, count: int = 8) -> list[torch.Tensor]:
    """One qa1 fact (`Mary went to the <place>.`) inside built-in filler, once per qa1 place: (count,
    segment_size) ids each, identical but for the place word."""
    import random

    from rmt_scale.data import FillerNoise

    rng, noise, rows = random.Random(0), FillerNoise(), []
    for _ in range(count):
        before = " ".join(noise.sentence(rng) for _ in range(6))
        after = " ".join(noise.sentence(rng) for _ in range(6))
        rows.append((tokenizer.encode(before, add_special_tokens=False)[-segment_size // 2:],
                     tokenizer.encode(" " + after, add_special_tokens=False)))
    segments = []
    for place in QA1_PLACES:
        fact = tokenizer.encode(f" Mary went to the {place}.", add_special_tokens=False)
        segments.append(torch.tensor([(b + fact + a)[:segment_size] for b, a in rows]))
    return segments


@torch.no_grad()
def place_sensitivity(model, tokenizer) -> float:
    """Mean over pairs of qa1 places of |w(fact at p) - w(fact at q)| / |w(fact at p)|: how much the
    memory one segment writes depends on where its fact says Mary went."""
    written = [written_memory(model, ids) for ids in place_segments(tokenizer, model.config.segment_size)]
    pairs = [(a, b) for a in range(len(written)) for b in range(len(written)) if a != b]
    return sum(relative_change(written[a], written[b]) for a, b in pairs) / len(pairs)


def adapter_rows(adapters: list[str]) -> list[list[str]]:
    """Place sensitivity of each trained qa1 adapter's written memory, and of a fresh memory of the
    same settings on its base (once per setting)."""
    from rmt_scale import RecurrentMemoryModel
    from rmt_scale.model.loading import load_causal_lm, load_tokenizer
    from rmt_scale.model.saving import read_rmt_config, recorded_base_path

    rows, fresh_done = [], set()
    for adapter in adapters:
        trained = RecurrentMemoryModel.from_pretrained(adapter).eval()
        base_path, config = recorded_base_path(adapter), read_rmt_config(adapter)
        tokenizer = load_tokenizer(adapter, base_path)
        if (base_path, config.memory_norm) not in fresh_done:
            fresh_done.add((base_path, config.memory_norm))
            torch.manual_seed(0)
            fresh = RecurrentMemoryModel.wrap(load_causal_lm(base_path, dtype=trained.memory.dtype), config).eval()
            rows.append([f"fresh memory on the base, `memory_norm: {config.memory_norm}`",
                         f"{place_sensitivity(fresh, tokenizer):.3f}"])
        rows.append([f"trained adapter `{adapter}`, `memory_norm: {config.memory_norm}`",
                     f"{place_sensitivity(trained, tokenizer):.3f}"])
    return rows


def run_identity(result: dict) -> tuple:
    return result["variant"]["name"], result["steps"]


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for result in results:
        steps = [point["step"] for point in result["trace"]]
        label = f"{result['variant']['name']}, {result['steps']} steps"
        left.plot(steps, [point["sensitivity"] for point in result["trace"]], marker="o", label=label)
        right.plot(steps, [point["accuracy"] for point in result["trace"]], marker="o", label=label)
    left.set(title="key sensitivity of the written memory", xlabel="step", ylabel="|w(x) - w(x, other key)| / |w(x)|")
    right.axhline(1 / len(KEY_WORDS), color="gray", linestyle="--", label="chance")
    right.set(title="recall accuracy after one memory transition", xlabel="step", ylabel="accuracy", ylim=(0, 1))
    right.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def memory_pathway(doc: Path, image_dir: Path, model_path: str, steps: int, results_path: Path,
                   adapters: list[str] | None = None, only: list[str] | None = None) -> None:
    unknown = sorted(set(only or ()) - {variant.key for variant in VARIANTS})
    if unknown:
        raise SystemExit(f"error: no memory-pathway variant {unknown}; the variants are "
                         f"{[variant.key for variant in VARIANTS]}")
    for variant in VARIANTS:
        if only and variant.key not in only:
            continue
        if any(run_identity(r) == (variant.name, steps) for r in load_runs(results_path)):
            continue
        save_run(results_path, train(model_path, variant, steps), run_identity)  # a stopped run resumes here
    results = sorted(load_runs(results_path), key=lambda r: r["steps"])
    plot(results, image_dir / "memory_pathway.png")
    present = {p["step"] for r in results for p in r["trace"]}
    marks = sorted({m for m in MARKS if m in present} | {r["steps"] for r in results})
    rows = []
    for r in results:
        at = {p["step"]: f"{p['sensitivity']:.3f} / {p['accuracy']:.2f}" for p in r["trace"]}
        rows.append([r["variant"]["name"], r["steps"], *(at.get(m, "-") for m in marks),
                     f"{r['seconds_per_step']:.1f}"])
    section = f"""## Carrying a key across one memory transition: write and read

`python -m benchmarks memory-pathway --model {model_path} [--steps N] [--only VARIANT ...]`
({machine_description()}; each row is one run of N steps, the learning rate's cosine spread over them).
Two segments of {SEGMENT} tokens, {MEMORY} memory tokens, sink token 0, `memory_norm: embedding` unless
the variant names another, batch {BATCH}: a two-word key (8 colour words, chance 0.125) follows `Key:` in segment 1, and segment 2
ends with ` Answer` and the key, so only the memory can carry it. Each cell is *key sensitivity /
accuracy* on {VALID} held-out samples: key sensitivity is |w(x) - w(x with another key)| / |w(x)| for
the memory w that segment 1 writes; near zero, the memory no longer depends on the key.

![key sensitivity and accuracy against step](img/memory_pathway.png)

{markdown_table(["variant", "steps", *(f"step {m}" for m in marks), "s/step"], rows)}
"""
    section += f"""
**What the untrained base does with its memory** (the same samples; a logistic-regression probe fit
on the memory that segment 1 writes for 1,024 samples, tested on 256 others, reads the first key
word; the readouts give how often the base, reading segment 2 with no training, ranks the right key
word first among the eight, chance 0.125, on 128 samples):

{markdown_table(["filler", "probe: key from the written memory", "readout: initial memory",
                 "readout: written memory", "readout: `Key: w1 w2` embeddings in memory slots 0-2"],
                fresh_rows(model_path))}
"""
    if adapters:
        section += f"""
**Trained qa1 adapters** (`--adapter {' '.join(adapters)}`): *place sensitivity*, the same measure
for one segment holding `Mary went to the <place>.` in filler text, averaged over the pairs of qa1's
six places (8 segments each):

{markdown_table(["memory", "place sensitivity"], adapter_rows(adapters))}
"""
    write_section(doc, "memory-pathway", section)
    print(section)
