"""Extrapolation: train a tiny RMT on few segments, evaluate it on up to 64x as many.

    python -m benchmarks extrapolation [--quick] [--only NAME ...] [--results FILE]

Trains a 2-layer, hidden-64 random Llama from scratch on key recall (segments of 8 tokens, a key in
the first segment asked for at the end of the last) under a curriculum, then measures accuracy at
1x, 2x, 4x ... 64x the trained number of segments and traces the memory across segments
(`memory_decay.py`). Each factor the issue asks about is one recipe that differs from the base
in one field. Every finished run is saved to `--results` at once, so an interrupted benchmark
resumes where it stopped and `--only` lets several processes share the work; the section and
`docs/img/extrapolation.png` are written once every recipe is in the file. `--quick` trains three
short recipes and only prints their table (a smoke test: the recorded section stays).

Full run: about 70 minutes of training and evaluation on one core of a busy 2-core machine
(the 4,000-step 8-segment runs take ~10 minutes each); two `--only` processes halve that.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.memory_decay import CHANCE, Recipe, run
from benchmarks.report import (
    load_runs,
    machine_description,
    markdown_table,
    save_run,
    write_section,
)

MULTIPLES = [1, 2, 4, 8, 16, 32, 64]
REFERENCE = Recipe("issue 13 probe: 1, 2, 4")  # curriculum 1, 2, 4 segments, 1,500 steps, lr 1e-3
# A first stage of ONE segment shows the key in the same segment as the question, so the model
# learns to copy it by attention and never needs memory; the study's base starts at two segments
# (the reference rows show what the one-segment stage does).
BASE = replace(REFERENCE, name="base: 2, 4", stages=(2, 4))
NORMED = replace(BASE, name="memory_norm=embedding", memory_norm="embedding")
# (factor, recipe); within a factor, each recipe differs from BASE in the one field named.
FACTORS = [
    ("reference", REFERENCE),
    ("curriculum pacing", replace(REFERENCE, name="1, 2, 3, 4", stages=(1, 2, 3, 4))),
    ("curriculum pacing", replace(REFERENCE, name="4 only", stages=(4,))),
    ("curriculum pacing", BASE),
    ("curriculum pacing", replace(BASE, name="2, 4; vary_n_segments", vary_n_segments=True)),
    ("learning rate", replace(BASE, name="lr 3e-4", lr=3e-4)),
    ("learning rate", replace(BASE, name="lr 3e-3", lr=3e-3)),
    ("warmup, clipping", replace(BASE, name="warmup 150", warmup=150)),
    ("warmup, clipping", replace(BASE, name="clip 1.0", clip=1.0)),
    ("warmup, clipping", replace(REFERENCE, name="1, 2, 4; warmup 150, clip 1.0", warmup=150, clip=1.0)),
    ("memory size", replace(BASE, name="2 memory tokens", num_mem_tokens=2)),
    ("memory size", replace(BASE, name="16 memory tokens", num_mem_tokens=16)),
    ("BPTT depth", replace(BASE, name="bptt_depth 1", bptt_depth=1)),
    ("initialisation", replace(BASE, name="memory_init_std 0.1", memory_init_std=0.1)),
    ("memory update", replace(REFERENCE, name="memory_norm=embedding; 1, 2, 4", memory_norm="embedding")),
    ("memory update", NORMED),
    ("memory update", BEST := replace(NORMED, name="memory_norm=embedding, vary_n_segments", vary_n_segments=True)),
    ("memory update", STABLE := replace(BEST, name="memory_norm=embedding, vary_n_segments, clip 1.0", clip=1.0)),
]
# Training to 8 segments, which the probe (1, 2, 4, 8) failed at.
EIGHT = [
    ("8 segments", replace(BASE, name="2, 4, 8", stages=(2, 4, 8), steps=4000)),
    ("8 segments", replace(BEST, name="memory_norm=embedding, vary_n_segments; 2, 4, 8", stages=(2, 4, 8),
                           steps=4000)),
    ("8 segments", replace(STABLE, name="memory_norm=embedding, vary_n_segments, clip 1.0; 2, 4, 8",
                           stages=(2, 4, 8), steps=4000)),
]
SEEDS: tuple[int, ...] = ()  # more seeds of the base and the best recipe: (1,) adds one each


def all_runs(quick: bool) -> list[tuple[str, Recipe]]:
    runs = FACTORS + EIGHT + [
        ("seeds", replace(recipe, name=f"{recipe.name}, seed {seed}", seed=seed))
        for recipe in (BASE, STABLE) for seed in SEEDS
    ]
    if quick:  # a smoke test of the whole pipeline: a few runs, short, on small evaluations
        runs = [runs[3], FACTORS[-1], EIGHT[-1]]
        runs = [(factor, replace(r, steps=max(len(r.stages), r.steps // 10))) for factor, r in runs]
    return runs


def run_identity(result: dict) -> tuple:
    return result["recipe"], result["mode"]


def extrapolation(doc: Path, image_dir: Path, results_path: Path, quick: bool = False,
                  only: list[str] | None = None) -> list[dict] | None:
    """Train every recipe not yet in `results_path` (only those named in `only`, if given), then
    print the table and (full mode only) draw the figure and write the section. Returns the rows,
    or None while recipes are still missing (the section is left as it was)."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))  # tiny model: threads only contend
    mode = "quick" if quick else "full"
    eval_samples, trace = (64, 8) if quick else (256, 64)
    runs = all_runs(quick)
    for factor, recipe in runs:
        if only and recipe.name not in only:
            continue
        if any(run_identity(r) == (recipe.key(), mode) for r in load_runs(results_path)):
            continue
        print(f"[{factor}] {recipe.name} ...", flush=True)
        start = time.perf_counter()
        result = run(recipe, MULTIPLES, eval_samples, trace)
        result.update(factor=factor, mode=mode)
        save_run(results_path, result, run_identity)
        print(f"  {time.perf_counter() - start:.0f} s: " + "  ".join(
            f"{k}x {v:.2f}" for k, v in result["curve"].items()), flush=True)
    done = {json.dumps(r["recipe"], sort_keys=True): r for r in load_runs(results_path) if r["mode"] == mode}
    rows = []
    for factor, recipe in runs:
        result = done.get(json.dumps(recipe.key(), sort_keys=True))
        if result is not None:
            rows.append({**result, "factor": factor, "name": recipe.name})
    if only and len(rows) < len(runs):
        print(f"{len(rows)} of {len(runs)} runs done; the section is written once all are")
        return None
    print_table(rows)
    if quick:  # a smoke test never replaces the recorded figures
        return rows
    image_dir.mkdir(parents=True, exist_ok=True)
    plot(rows, image_dir / "extrapolation.png")
    write_section(doc, "extrapolation", section(rows, mode, eval_samples))
    return rows


def row_cells(row: dict) -> list[str]:
    trace = row["trace"]
    at = len(trace["drift"]) - 1  # the longest traced length
    return [row["factor"], row["name"], str(row["trained_segments"]),
            *[f"{row['curve'][str(k)]:.2f}" for k in MULTIPLES],
            f"{trace['rms'][at]:.2f}", f"{trace['key_share'][at]:.2f}", f"{trace['drift'][at]:.2f}",
            f"{row['copied_share'][-1]:.2f}" if "copied_share" in row else "-",
            f"{row['max_grad_norm']:.0f}", f"{row['train_seconds']:.0f}"]


HEADER = ["factor", "recipe", "trained segs", *[f"{k}x" for k in MULTIPLES],
          "mem RMS", "key share", "drift", "carried", "max grad", "train s"]


def print_table(rows: list[dict]) -> None:
    print(markdown_table(HEADER, [row_cells(r) for r in rows]))


def plot(rows: list[dict], path: Path) -> None:
    """Accuracy against length, and the memory's drift and scale against segments read (both in
    multiples of the trained length), for the runs that learned at their trained length."""
    from rmt_scale.evaluation.plots import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), dpi=110)
    plotted = {BASE.name, "2, 4; vary_n_segments", "clip 1.0", "2, 4, 8", BEST.name, STABLE.name, EIGHT[-1][1].name}
    shown = [r for r in rows if r["name"] in plotted and r["curve"]["1"] >= 0.9]
    for r in shown:
        axes[0].plot(MULTIPLES, [r["curve"][str(k)] for k in MULTIPLES], marker="o", label=r["name"])
        multiples = [s / r["trained_segments"] for s in range(1, len(r["trace"]["rms"]))]
        axes[1].plot(multiples, r["trace"]["drift"][1:], label=r["name"])
        axes[2].plot(multiples, r["trace"]["rms"][1:], label=r["name"])
    axes[0].axhline(CHANCE, color="grey", linestyle=":", label="chance")
    axes[0].set(xscale="log", xlabel="evaluated / trained segments", ylabel="key recall accuracy",
                ylim=(0, 1.05), title="accuracy against length")
    axes[0].set_xticks(MULTIPLES, labels=[f"{k}x" for k in MULTIPLES])
    axes[1].set(xscale="log", xlabel="segments read / trained segments",
                ylabel="drift of each key's memory (key spacings)", title="where a key's memory moves to")
    axes[2].set(xscale="log", yscale="log", xlabel="segments read / trained segments", ylabel="memory RMS",
                title=f"memory scale (token embeddings ~{rows[0]['embedding_rms']:.2f})")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=7, loc="center")  # one legend, where the scale panel is empty
    save_figure(fig, path)


def section(rows: list[dict], mode: str, eval_samples: int) -> str:
    return f"""## Extrapolation: memory against length

`python -m benchmarks extrapolation` ({mode} mode; {machine_description()}). A 2-layer, hidden-64
random Llama with memory learns key recall from scratch (segments of 8 tokens, a 2-token key from 8
symbols in the first segment, asked for at the end of the last; chance {CHANCE:.3f}) under a
curriculum, and is evaluated on {eval_samples} held-out samples at 1x to 64x the trained number of
segments. The first rows are the issue's probe (curriculum 1, 2, 4 segments, 1,500 steps, batch 32,
AdamW lr 1e-3, no warmup or clipping, 4 memory tokens, full BPTT, `memory_init_std` 1) and its
variants; every other recipe differs from the base (the same, curriculum 2, 4) in the fields named. "mem RMS", "key share" and "drift" trace the memory at 64x the trained length: its RMS,
the share of its variance across samples explained by the key, and how far each key's mean memory
has moved from where it was at the trained length, in units of the distance between two keys' means
there. "carried" is |memory placed at the write positions| / |their residual stream before the
final norm| at 16x (near 1: the new memory is mostly the old one carried through; recorded for the
runs made after it was added). "max grad" is the largest gradient norm of the run (before clipping).

![accuracy against length, drift and scale of the memory](img/extrapolation.png)

{markdown_table(HEADER, [row_cells(r) for r in rows])}

{findings({r["name"]: r for r in rows})}
"""


def findings(by_name: dict[str, dict]) -> str:
    """What the runs show, with the figures read from the runs themselves."""
    def acc(name: str, k: int) -> str:
        return f"{by_name[name]['curve'][str(k)]:.2f}"

    def trace(name: str, key: str, segments: int) -> str:
        return f"{by_name[name]['trace'][key][segments]:.2f}"

    def carried(memory_norm: str | None) -> str:
        """The 'carried' share at 16x of the first learned run with this memory update."""
        for result in by_name.values():
            if (result["recipe"]["memory_norm"] == memory_norm and "copied_share" in result
                    and result["curve"]["1"] >= 0.9):
                return f"{result['copied_share'][-1]:.2f} ({result['name']})"
        return "not recorded"

    probe, base, best, eight = REFERENCE.name, BASE.name, STABLE.name, EIGHT[-1][1].name
    stages = by_name[probe]["stage_train_accuracy"]
    learned = [r for r in by_name.values() if r["recipe"]["memory_norm"] is None and r["curve"]["1"] >= 0.9]
    least_drift = min(r["trace"]["drift"][-1] for r in learned)
    met = by_name[eight]["curve"]["64"] >= 0.9 and by_name[eight]["curve"]["1"] >= 0.9
    verdict = "are met by that recipe" if met else "are not met"
    return f"""**Why training fails.** A first stage of one segment puts the key in the same segment as the
question: the model learns to copy it by attention ({stages['1']:.2f} train accuracy) and never needs
memory; after the switch to two segments the unclipped run never learns again ({stages['2']:.2f}
train accuracy, chance ever after), also with a slower 1, 2, 3, 4 pacing and with `memory_norm`.
Every run sees gradient norms in the tens to hundreds ("max grad") where the median of a run that
learns is 0.03 or less, and warmup 150 with clipping at 1.0 keeps the same curriculum alive
({acc('1, 2, 4; warmup 150, clip 1.0', 1)} at the trained length); so does starting at two segments
({acc(base, 1)}), and training to 8 segments then works with the reference semantics ("2, 4, 8":
{acc('2, 4, 8', 1)}). The same death at a switch hit the unclipped
`memory_norm=embedding, vary_n_segments; 2, 4, 8` ({acc(EIGHT[1][1].name, 1)} at 8 segments; clipped:
{acc(eight, 1)}), so clipping belongs in every recipe. lr 3e-3 and `bptt_depth=1` did not train.

**Why memory decays (reference semantics).** Accuracy falls long before the key is lost: with
`clip 1.0` accuracy is {acc('clip 1.0', 4)} at 4x while the key still explains
{trace('clip 1.0', 'key_share', 16)} of the memory's variance across samples at that length, and
{trace('clip 1.0', 'key_share', -1)} at 64x. The memory's RMS stays bounded (a post-final-norm state:
{trace(base, 'rms', 4)} at the trained length, {trace(base, 'rms', -1)} at 64x; it neither explodes
nor collapses). What moves is where each key's memory sits: {trace(base, 'drift', 8)} key spacings
from its place at the trained length after 2x, {trace(base, 'drift', 16)} after 4x,
{trace(base, 'drift', -1)} at 64x (base), into states the LM head never saw, and the readout
fails once the drift passes about half a spacing (in some runs the keys then also merge: key share
{trace(base, 'key_share', -1)} at 64x for the base). The cause is the scale: the written memory
enters the next segment at RMS ~{trace(base, 'rms', 4)}, ~{float(trace(base, 'rms', 4)) / by_name[base]['embedding_rms']:.0f}x
the token embeddings' {by_name[base]['embedding_rms']:.3f}, so at the write positions the residual
stream is almost all the copied memory (carried share {carried(None)}). Each segment is then a
near-identity map plus a small filler-driven update that is nearly the same for every key, and the
memory integrates those updates with no restoring force. Pacing, learning rate, clipping and memory
size change how fast it drifts, not whether: of the {len(learned)} reference-semantics runs that
learned, the least drift at 64x is {least_drift:.2f} key spacings.

**What holds it.** `memory_norm=embedding` rescales each written vector to the initial memory's RMS
(the tokens' scale). The copied memory is then a small part of the write positions' residual
(carried share {carried("embedding")}): the layers rebuild the memory every segment, and the update
becomes a contraction that settles on one state per key. Alone it does not train (the switch to 4
segments kills it); with `vary_n_segments` (every length up to the stage, so the readout sees the
memory's whole path to that state) and clipping it holds: trained on 2, 4 segments
{acc(best, 1)} / {acc(best, 4)} / {acc(best, 64)} at 1x / 4x / 64x (unclipped
{acc(BEST.name, 1)} / {acc(BEST.name, 4)} / {acc(BEST.name, 64)}; base: {acc(base, 1)} /
{acc(base, 4)} / {acc(base, 64)}); trained on 2, 4, 8 segments {acc(eight, 1)} / {acc(eight, 4)} /
{acc(eight, 64)}, its drift {trace(eight, 'drift', -1)} key spacings after {64 * 8} segments. Both
targets (0.90 at 64x; training to 8 segments that learns) {verdict}; the default stays the
reference update."""
