"""Train a tiny RMT on key recall and measure how its memory holds as the input grows.

Used by `python -m benchmarks extrapolation`. Everything goes through the public API
(`RMTConfig`, `RecurrentMemoryModel.wrap`); the curriculum loop here is developer tooling, written
out plainly so each factor the benchmark varies (pacing, learning rate, warmup, clipping, BPTT
depth, memory size, initialisation, memory update) is one field of `Recipe`.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field

import torch

from rmt_scale import RecurrentMemoryModel, RMTConfig
from rmt_scale.data.synthetic import KeyRecallDataset, key_recall_accuracy

SEGMENT, VOCAB, KEY_LENGTH, KEY_VOCAB = 8, 32, 2, 8  # the setup of tests/model/test_memory_learns.py
CHANCE = 1 / KEY_VOCAB
EVAL_SEED, DIAGNOSTIC_SEED = 10_000_000, 20_000_000  # far from any training step's seed


@dataclass(frozen=True)
class Recipe:
    """One training run. `stages` are the curriculum's segment counts, each run for an equal share
    of `steps`; the trained length is the last stage."""

    name: str
    stages: tuple[int, ...] = (1, 2, 4)
    steps: int = 1500
    lr: float = 1e-3
    warmup: int = 0
    clip: float | None = None
    vary_n_segments: bool = False  # each batch draws its segment count from 1..stage (reference RMT)
    num_mem_tokens: int = 4
    bptt_depth: int | None = None
    memory_init_std: float = 1.0
    memory_norm: str | None = None
    hidden: int = 64
    layers: int = 2
    batch: int = 32
    seed: int = 0
    extra: dict = field(default_factory=dict, compare=False)

    def rmt_config(self) -> RMTConfig:
        return RMTConfig(num_mem_tokens=self.num_mem_tokens, segment_size=SEGMENT, bptt_depth=self.bptt_depth,
                         memory_init_std=self.memory_init_std, memory_norm=self.memory_norm,
                         segment_checkpointing=False)  # tiny activations: recomputing only costs time

    def key(self) -> dict:
        """What identifies the run's result (the name is only a label)."""
        values = asdict(self)
        values.pop("name")
        values.pop("extra")
        values["stages"] = list(self.stages)
        return values


def build_model(recipe: Recipe) -> RecurrentMemoryModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(recipe.seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=recipe.hidden, intermediate_size=2 * recipe.hidden,
                         num_hidden_layers=recipe.layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return RecurrentMemoryModel.wrap(LlamaForCausalLM(config), recipe.rmt_config())


def batch_of(num_segments: int, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = KeyRecallDataset(count, SEGMENT, num_segments, VOCAB, key_length=KEY_LENGTH, key_vocab=KEY_VOCAB,
                            seed=seed)
    items = [data[i] for i in range(count)]
    return torch.stack([x["input_ids"] for x in items]), torch.stack([x["labels"] for x in items])


def learning_rate(recipe: Recipe, step: int) -> float:
    """Linear warmup to `lr`, then constant (the curriculum, not a decay, sets the pace)."""
    if recipe.warmup and step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    return recipe.lr


def train(recipe: Recipe, log_every: int = 0) -> tuple[RecurrentMemoryModel, dict]:
    """Run the curriculum; returns the model and a log (per-stage final accuracy, time, losses)."""
    model = build_model(recipe).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.0)
    pick = random.Random(recipe.seed)  # segment counts under vary_n_segments: its own generator
    per_stage = recipe.steps // len(recipe.stages)
    start, step, stage_accuracy, grad_norms = time.perf_counter(), 0, {}, []
    for stage in recipe.stages:
        window = []
        for _ in range(per_stage):
            n = pick.randint(1, stage) if recipe.vary_n_segments else stage
            input_ids, labels = batch_of(n, recipe.batch, seed=recipe.seed * 1_000_003 + step + 1)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(recipe, step)
            output = model(input_ids, labels=labels)
            optimizer.zero_grad()
            output.loss.backward()
            limit = recipe.clip if recipe.clip is not None else float("inf")
            grad_norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), limit)))
            optimizer.step()
            if n == stage:
                window = (window + [key_recall_accuracy(output.predictions, labels)])[-50:]
            step += 1
            if log_every and step % log_every == 0:
                print(f"  {recipe.name} step {step} stage {stage} loss {output.loss.item():.3f} "
                      f"train acc {sum(window) / max(1, len(window)):.2f}", flush=True)
        stage_accuracy[stage] = sum(window) / max(1, len(window))
    seconds = time.perf_counter() - start
    finite = [g for g in grad_norms if g == g and g != float("inf")]
    return model.eval(), {"train_seconds": seconds, "stage_train_accuracy": stage_accuracy,
                          "median_grad_norm": sorted(finite)[len(finite) // 2] if finite else None,
                          "max_grad_norm": max(finite) if finite else None}


@torch.no_grad()
def accuracy_at(model: RecurrentMemoryModel, num_segments: int, samples: int, chunk: int = 128) -> float:
    """Key-recall accuracy over `samples` held-out samples of `num_segments` segments. No grad,
    chunks of `chunk` samples, and predictions instead of logits: memory stays (chunk, M, D) and
    (chunk, T) ids however many segments there are."""
    model.eval()
    correct = total = 0.0
    for first in range(0, samples, chunk):
        count = min(chunk, samples - first)
        input_ids, labels = batch_of(num_segments, count, seed=EVAL_SEED + 7919 * num_segments + first)
        predictions = model(input_ids, labels=labels).predictions
        correct += key_recall_accuracy(predictions, labels) * count
        total += count
    return correct / total


@torch.no_grad()
def memory_trace(model: RecurrentMemoryModel, num_segments: int, reference: int, keys: int = 8,
                 per_key: int = 32) -> dict:
    """How the memory evolves over segments, read directly from the cell.

    `keys` different keys, each under `per_key` different random fillers. Returns, per segment s
    (entry s is the memory after reading s segments; entry 0 the learned initial memory):
        rms: root mean square of the memory's entries (does it drift, explode or collapse?);
        key_share: the fraction of the memory's variance across samples explained by the key
            (between-key variance / total variance of the flattened memory). The rest is
            filler: 1 means the memory holds the key cleanly, ~(keys-1)/(samples-1) means
            the key is no more visible than chance.
        drift: how far each key's mean memory has moved from where it was after `reference`
            segments (the trained length), in units of the typical distance between two keys'
            means there: above ~0.5 the memory of a key sits nearer to where another key's was.
        centroid_recall: the fraction of samples whose memory lies nearest to their own key's
            mean at the reference segment: a readout fixed at the trained length, as the LM's is.
    """
    samples = keys * per_key
    input_ids, _ = batch_of(num_segments, samples, seed=DIAGNOSTIC_SEED)
    key_of = torch.arange(samples) % keys
    # Key k written as tokens (4 + k, 4 + (k + 1) % KEY_VOCAB): distinct keys, same layout as the data.
    input_ids[:, 1] = 4 + key_of
    input_ids[:, 2] = 4 + (key_of + 1) % KEY_VOCAB
    memory = model.initial_memory(samples)
    rms, key_share = [float(memory.float().pow(2).mean().sqrt())], [0.0]
    centroids, states = [], []
    for s in range(num_segments):
        _, memory = model.cell(memory, input_ids[:, s * SEGMENT : (s + 1) * SEGMENT])
        flat = memory.float().flatten(1)  # (samples, M*D)
        rms.append(float(flat.pow(2).mean().sqrt()))
        centred = flat - flat.mean(0)
        means = torch.stack([centred[key_of == k].mean(0) for k in range(keys)])  # (keys, M*D)
        between = float(means.pow(2).sum(1).mean())
        total = float(centred.pow(2).sum(1).mean())
        key_share.append(between / total if total > 0 else 0.0)
        centroids.append(torch.stack([flat[key_of == k].mean(0) for k in range(keys)]))
        states.append(flat)
    anchor = centroids[min(reference, num_segments) - 1]  # (keys, M*D)
    spread = float(torch.cdist(anchor, anchor).sum() / (keys * (keys - 1)))
    drift = [0.0] + [float((c - anchor).norm(dim=1).mean()) / spread for c in centroids]
    recall = [0.0] + [float((torch.cdist(x, anchor).argmin(1) == key_of).float().mean()) for x in states]
    return {"rms": rms, "key_share": key_share, "drift": drift, "centroid_recall": recall}


@torch.no_grad()
def copied_share(model: RecurrentMemoryModel, num_segments: int, samples: int = 64) -> list[float]:
    """Per segment, |memory placed at the write positions| / |their residual stream before the
    final norm|: near 1, the written memory is mostly the old one carried through (the update is
    close to the identity); near 0, the layers rebuild it. Llama bases (the final norm is
    `model.model.norm`)."""
    input_ids, _ = batch_of(num_segments, samples, seed=DIAGNOSTIC_SEED + 1)
    captured = {}
    hook = model.base.model.norm.register_forward_hook(lambda _m, args, _o: captured.update(pre=args[0]))
    memory, share = model.initial_memory(samples), []
    try:
        for s in range(num_segments):
            _, new = model.cell(memory, input_ids[:, s * SEGMENT : (s + 1) * SEGMENT])
            residual = captured["pre"][:, -model.config.num_mem_tokens :].float().flatten(1)
            share.append(float((memory.float().flatten(1).norm(dim=1) / residual.norm(dim=1)).mean()))
            memory = new
    finally:
        hook.remove()
    return share


def run(recipe: Recipe, multiples: list[int], eval_samples: int, trace_multiple: int,
        log_every: int = 0) -> dict:
    """Train, then evaluate at each multiple of the trained length and trace the memory up to
    `trace_multiple` times the trained length."""
    model, log = train(recipe, log_every)
    trained = recipe.stages[-1]
    start = time.perf_counter()
    curve = {str(k): accuracy_at(model, k * trained, eval_samples) for k in multiples}
    log["eval_seconds"] = time.perf_counter() - start
    log["copied_share"] = copied_share(model, 16 * trained)
    return {"name": recipe.name, "recipe": recipe.key(), "curve": curve, "trained_segments": trained,
            "trace": memory_trace(model, trace_multiple * trained, trained), "embedding_rms": embedding_rms(model), **log}


def embedding_rms(model: RecurrentMemoryModel) -> float:
    """RMS of the token embeddings: the scale every token enters the model at."""
    return float(model.base.get_input_embeddings().weight.detach().float().pow(2).mean().sqrt())
