"""Where the segment's tokens look: attention share and hidden-state size of the sink, the memory
slots and the tokens, layer by layer, with and without a sink token before the memory.

A pretrained decoder turns its first position into an attention sink: a position with huge
activations that many heads attend to and whose content they ignore. In the reference RMT layout
`[memory | tokens | memory]` the first position is memory slot 0. This benchmark shows which
position takes that role for a given model, so the effect of `RMTConfig.sink_token` is measured,
not assumed. Writes a section of docs/results.md.

    python -m benchmarks memory-attention --model ADAPTER_OR_BASE [--text BOOK.txt] [--sink-token 0]
"""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.report import machine_description, markdown_table, write_section

SEGMENT_TOKENS = 128


def _load(model_path: str):
    from rmt_scale import RecurrentMemoryModel, RMTConfig
    from rmt_scale.model.loading import load_causal_lm, load_tokenizer
    from rmt_scale.model.saving import RMT_CONFIG_FILE, recorded_base_path

    path = Path(model_path).expanduser()
    if (path / RMT_CONFIG_FILE).is_file():
        model = RecurrentMemoryModel.from_pretrained(path, attn_implementation="eager")
        tokenizer = load_tokenizer(path, recorded_base_path(path))
        return model, tokenizer, "trained memory"
    base = load_causal_lm(path, attn_implementation="eager")
    return RecurrentMemoryModel.wrap(base, RMTConfig(num_mem_tokens=16)), load_tokenizer(path), "fresh memory"


def _segment_ids(tokenizer, text_file: str | None) -> torch.Tensor:
    import random

    from rmt_scale.data import FillerNoise

    if text_file:
        text = Path(text_file).read_text(encoding="utf-8")
        text = text[len(text) // 3:]  # past any front matter
    else:
        rng = random.Random(0)
        text = " ".join(FillerNoise().sentence(rng) for _ in range(60))
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[:, :SEGMENT_TOKENS]
    if ids.shape[1] < SEGMENT_TOKENS:
        raise SystemExit(f"the text gives only {ids.shape[1]} tokens; need {SEGMENT_TOKENS}")
    return ids


@torch.no_grad()
def attention_profile(model, ids: torch.Tensor, sink_token: int | None) -> list[dict]:
    """Per layer: mean attention share of the segment tokens' queries (over heads and queries) on
    the sink, memory slot 0, slots 1..M-1 and the tokens; and hidden-state L2 norms there.

    The segment is laid out by the memory cell itself (`MemoryCell.embed`, as read by generation:
    no write copy), with `model`'s memory and `sink_token` in place of its own setting.
    """
    from dataclasses import replace

    from rmt_scale.model.memory import MemoryCell

    cell = MemoryCell(model.base, replace(model.config, sink_token=sink_token)).to(model.memory.device)
    cell.memory.copy_(model.memory)
    inputs, _, positions = cell.embed(cell.memory.unsqueeze(0), ids, None, write=False)
    out = cell.causal_lm.get_decoder()(inputs_embeds=inputs, position_ids=positions,
                                       output_attentions=True, output_hidden_states=True, use_cache=False)
    m = cell.num_mem_tokens
    s = cell.prefix - m
    rows = []
    for layer, attention in enumerate(out.attentions):
        share = attention[0, :, s + m:, :].float().mean(dim=(0, 1))  # over heads and token queries
        hidden = out.hidden_states[layer + 1][0].float().norm(dim=-1)
        rows.append({
            "layer": layer, "sink": float(share[:s].sum()), "slot0": float(share[s]),
            "slots": float(share[s + 1: s + m].sum()), "tokens": float(share[s + m:].sum()),
            "norm_sink": float(hidden[0]) if s else None, "norm_slot0": float(hidden[s]),
            "norm_slots": float(hidden[s + 1: s + m].mean()), "norm_tokens": float(hidden[s + m:].mean()),
        })
    return rows


def memory_attention(doc: Path, model_path: str, text_file: str | None, sink_token: int) -> None:
    model, tokenizer, kind = _load(model_path)
    model.eval()
    ids = _segment_ids(tokenizer, text_file)
    name = tokenizer.convert_ids_to_tokens([sink_token])[0]
    layers = None
    tables = []
    for sink in (None, sink_token):
        rows = attention_profile(model, ids, sink)
        count = len(rows)
        layers = layers or sorted({0, count // 4, count // 2, 3 * count // 4, count - 1} | set(range(0, count, 6)))
        title = "reference layout `[memory | tokens]`" if sink is None else f"sink token {sink} (`{name}`) first"
        body = [[r["layer"], "-" if sink is None else f"{r['sink']:.2f}", f"{r['slot0']:.2f}", f"{r['slots']:.2f}",
                 f"{r['tokens']:.2f}", "-" if sink is None else f"{r['norm_sink']:,.0f}", f"{r['norm_slot0']:,.0f}",
                 f"{r['norm_slots']:,.0f}", f"{r['norm_tokens']:,.0f}"] for r in rows if r["layer"] in layers]
        tables.append(f"**{title}**\n\n" + markdown_table(
            ["layer", "attn: sink", "attn: slot 0", f"attn: slots 1-{model.config.num_mem_tokens - 1}",
             "attn: tokens", "norm: sink", "norm: slot 0", "norm: slots 1+", "norm: tokens"], body))
    text = text_file or "the built-in filler text"
    section = f"""## Where a segment's tokens look: the attention sink

`python -m benchmarks memory-attention --model {model_path}{f' --text {text_file}' if text_file else ''} --sink-token {sink_token}`
({kind}; one segment of {SEGMENT_TOKENS} tokens of {Path(text).name} read after the
{model.config.num_mem_tokens} memory slots; {machine_description()}).
"attn" is the share of attention, averaged over heads and over the segment's token queries, that
lands on each part; "norm" is the L2 norm of the hidden state after that layer (mean over the part).

{(chr(10) * 2).join(tables)}
"""
    write_section(doc, "memory-attention", section)
    print(section)
