"""One measurement in a fresh process; prints one JSON line. Used by the benchmark drivers.

    python -m benchmarks.probe train --segments 4 --checkpointing 1 ...
    python -m benchmarks.probe generate --tokens 1048576 ...
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from rmt_scale.model.loading import DTYPES


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def build_base(args):
    """A base causal LM: a local checkpoint (--model DIR) or a random Llama of the given shape."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    if args.model:
        # A benchmark never runs a checkpoint's own code: it measures the architectures we support.
        return AutoModelForCausalLM.from_pretrained(args.model, dtype=DTYPES[args.dtype], trust_remote_code=False)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 64),
        num_key_value_heads=max(1, args.hidden // 64), max_position_embeddings=4096,
    )
    return LlamaForCausalLM(config).to(DTYPES[args.dtype])


def build_model(args):
    from rmt_scale import RecurrentMemoryModel, RMTConfig

    base = build_base(args)
    rmt = RMTConfig(num_mem_tokens=args.mem, segment_size=args.segment_size,
                    segment_checkpointing=bool(args.checkpointing))
    return RecurrentMemoryModel.wrap(base, rmt)


def train_step(args) -> dict:
    model = build_model(args).train()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    vocab = model.base.config.vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.segments * args.segment_size), device=device)
    baseline = peak_rss_mib()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    loss = model(ids, labels=ids).loss
    synchronize()
    forward_seconds = time.perf_counter() - start
    loss.backward()
    synchronize()
    seconds = time.perf_counter() - start
    result = {"segments": args.segments, "checkpointing": bool(args.checkpointing),
              "seconds": seconds, "forward_seconds": forward_seconds,
              "peak_rss_mib": peak_rss_mib(), "rss_before_mib": baseline}
    if device == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def generate(args) -> dict:
    model = build_model(args).eval()
    ids = torch.randint(0, args.vocab, (1, args.tokens))
    baseline = peak_rss_mib()
    start = time.perf_counter()
    new = model.generate(ids, max_new_tokens=4)
    seconds = time.perf_counter() - start
    return {"tokens": args.tokens, "seconds": seconds, "tokens_per_s": args.tokens / seconds,
            "peak_rss_mib": peak_rss_mib(), "rss_before_mib": baseline, "new_tokens": new.shape[1]}


def device_of(module) -> torch.device:
    return next(module.parameters()).device


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def memory_fields(result: dict) -> dict:
    result["peak_rss_mib"] = peak_rss_mib()
    if torch.cuda.is_available():
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def prefill(args) -> dict:
    """Read `--tokens` tokens: with memory (segment by segment) or full attention (one forward)."""
    model = build_model(args).eval()
    if torch.cuda.is_available():
        model.cuda()
    device = device_of(model)
    vocab = model.base.config.vocab_size
    ids = torch.randint(0, vocab, (1, args.tokens), device=device)
    start = time.perf_counter()
    with torch.no_grad():
        if args.mode == "rmt":
            model.read_context(ids)
        else:
            # Full attention over the whole input, logits of the last position only (as a
            # generation prefill does): what the model costs without memory.
            model.base(input_ids=ids, logits_to_keep=1, use_cache=False)
    synchronize()
    seconds = time.perf_counter() - start
    return memory_fields({"mode": args.mode, "tokens": args.tokens, "seconds": seconds,
                          "tokens_per_s": args.tokens / seconds})


def overhead(args) -> dict:
    """RMT time for N segments against N x the base's time for one `2M + S` forward."""
    model = build_model(args).eval()
    if torch.cuda.is_available():
        model.cuda()
    device = device_of(model)
    backbone = model.cell.causal_lm.get_decoder()
    size, mem = args.segment_size, args.mem
    ids = torch.randint(0, model.base.config.vocab_size, (args.batch, args.segments * size + 1), device=device)
    embeds = torch.randn(args.batch, 2 * mem + size, backbone.config.hidden_size, device=device,
                         dtype=next(backbone.parameters()).dtype)

    def timed(fn):
        synchronize()
        begin = time.perf_counter()
        fn()
        synchronize()
        return time.perf_counter() - begin

    def base_forwards():
        for _ in range(args.segments):
            backbone(inputs_embeds=embeds, use_cache=False)

    def read():
        # read_context reads all but the last segment: one extra token makes it read exactly N.
        model.read_context(ids)

    with torch.no_grad():
        read(), base_forwards()  # warm-up
        # Alternate the two measurements and take the median of the paired ratios: the machine's
        # speed drifts by more than the 5% we want to resolve, and pairing cancels the drift.
        pairs = [(timed(read), timed(base_forwards)) for _ in range(args.repeats)]
    ratios = sorted(r / i for r, i in pairs)
    ratio = ratios[len(ratios) // 2]
    rmt = sorted(r for r, _ in pairs)[len(pairs) // 2]
    ideal = sorted(i for _, i in pairs)[len(pairs) // 2]
    one = ideal / args.segments
    return {"segments": args.segments, "rmt_seconds": rmt, "base_segment_seconds": one,
            "ideal_seconds": ideal, "ratio": ratio, "ratios": ratios}




def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["train", "generate", "prefill", "overhead"])
    parser.add_argument("--mode", choices=["rmt", "full"], default="rmt")
    parser.add_argument("--model", default=None, help="local checkpoint instead of a random Llama")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--segments", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=32768)
    parser.add_argument("--checkpointing", type=int, default=1)
    parser.add_argument("--segment-size", type=int, default=512)
    parser.add_argument("--mem", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    kinds = {"train": train_step, "generate": generate, "prefill": prefill, "overhead": overhead}
    result = kinds[args.kind](args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
