"""Small GGUF files written in memory with the `gguf` package: a whole tiny Llama (weights and
byte-level BPE tokenizer, as llama.cpp's converter lays them out) and damaged variants of it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

# transformers' Llama parameter names -> llama.cpp's tensor names ({i}: the layer).
_LAYER_TENSORS = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's interleaving of q/k rows for its rope kernel (transformers undoes it on load)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def llama_tensors(model) -> dict[str, np.ndarray]:
    """The GGUF tensors of a LlamaForCausalLM, named and permuted as llama.cpp writes them."""
    config = model.config
    state = {key: value.detach().float().numpy() for key, value in model.state_dict().items()}
    tensors = {"token_embd.weight": state["model.embed_tokens.weight"],
               "output_norm.weight": state["model.norm.weight"]}
    if not config.tie_word_embeddings:
        tensors["output.weight"] = state["lm_head.weight"]
    for layer in range(config.num_hidden_layers):
        for hf_name, gguf_name in _LAYER_TENSORS.items():
            weights = state[f"model.layers.{layer}.{hf_name}.weight"]
            if gguf_name == "attn_q":
                weights = _permute(weights, config.num_attention_heads)
            elif gguf_name == "attn_k":
                weights = _permute(weights, config.num_key_value_heads)
            tensors[f"blk.{layer}.{gguf_name}.weight"] = weights
    return tensors


def write_gguf(path: Path, architecture: str, metadata: dict, tensors: dict[str, np.ndarray],
               tokens: list[str] | None = None, merges: list[str] | None = None,
               bos: int = 1, eos: int = 2) -> Path:
    """Write a GGUF of `architecture` with `metadata` ({key without the architecture prefix:
    int or float}), `tensors` (fp32) and, with `tokens`, a byte-level BPE tokenizer."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny")
    for key, value in metadata.items():
        add = writer.add_float32 if isinstance(value, float) else writer.add_uint32
        add(f"{architecture}.{key}", value)
    if tokens is not None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_types([gguf.TokenType.NORMAL] * len(tokens))
        writer.add_token_merges(merges or [])
        writer.add_bos_token_id(bos)
        writer.add_eos_token_id(eos)
    for name, weights in tensors.items():
        writer.add_tensor(name, np.ascontiguousarray(weights, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def tiny_llama_and_tokenizer(seed: int = 0):
    """A tiny random Llama (untied LM head) and a byte-level BPE tokenizer of the same vocabulary."""
    from tests.bpe import byte_level_bpe
    from tests.tiny_models import tiny_causal_lm

    tokenizer = byte_level_bpe(["the cat sat on the mat", "a dog ran in the park"] * 20, 300,
                               pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    model = tiny_causal_lm("llama", seed=seed, vocab_size=len(tokenizer))
    return model, tokenizer


def write_llama_gguf(path: Path, model=None, tokenizer=None, drop: Iterable[str] = (),
                     reshape: Iterable[str] = (), merges: list[str] | None = None) -> Path:
    """A complete GGUF of a tiny Llama, or one damaged: the tensors in `drop` left out, those in
    `reshape` cut to half their rows, `merges` instead of the tokenizer's own."""
    if model is None:
        model, tokenizer = tiny_llama_and_tokenizer()
    config = model.config
    tensors = llama_tensors(model)
    for name in drop:
        del tensors[name]
    for name in reshape:
        tensors[name] = tensors[name][: tensors[name].shape[0] // 2]
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    own_merges = [" ".join(pair) for pair in _merges(tokenizer)]
    metadata = {
        "context_length": config.max_position_embeddings, "embedding_length": config.hidden_size,
        "block_count": config.num_hidden_layers, "feed_forward_length": config.intermediate_size,
        "attention.head_count": config.num_attention_heads,
        "attention.head_count_kv": config.num_key_value_heads,
        "rope.dimension_count": config.hidden_size // config.num_attention_heads,
        "rope.freq_base": float(config.rope_parameters["rope_theta"]),
        "attention.layer_norm_rms_epsilon": float(config.rms_norm_eps),
        "vocab_size": config.vocab_size,
    }
    return write_gguf(path, "llama", metadata, tensors, tokens=tokens,
                      merges=own_merges if merges is None else merges,
                      bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id)


def _merges(tokenizer) -> list[tuple[str, str]]:
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]


def write_t5_gguf(path: Path) -> Path:
    """A GGUF whose architecture is t5 (an encoder-decoder: no causal LM to import)."""
    metadata = {"context_length": 64, "embedding_length": 8, "feed_forward_length": 16,
                "block_count": 1, "attention.head_count": 2, "attention.key_length": 4,
                "attention.value_length": 4, "attention.layer_norm_epsilon": 1e-6,
                "attention.relative_buckets_count": 32, "decoder_start_token_id": 0}
    tensors = {"token_embd.weight": np.zeros((16, 8), np.float32),
               "enc.output_norm.weight": np.ones((8,), np.float32)}
    return write_gguf(path, "t5", metadata, tensors)


def state_dict_of(path: Path) -> dict[str, torch.Tensor]:
    """The weights of an imported checkpoint directory."""
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))
