"""`rmt-scale generate`: answers with memory over a long prompt, streamed; device, dtype, sampling,
stdin, and one-line errors (tiny models built in memory; one slow test on the default checkpoint)."""

from __future__ import annotations

import io

import pytest
import torch

from rmt_scale.cli.main import main
from rmt_scale.model.recurrent import RecurrentMemoryModel

# About 120 tokens of the test tokenizer: 8 segments of 16, so the answer comes after memory.
PROMPT = "Mary went to the kitchen. John moved to the garden. " * 6 + "Question: Where is Mary?\nAnswer:"


def generate(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["generate", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def expected_greedy(adapter_dir, base_dir, eval_tokenizer, max_new_tokens: int) -> tuple[str, int]:
    model = RecurrentMemoryModel.from_pretrained(adapter_dir).eval()
    ids = eval_tokenizer(PROMPT, return_tensors="pt").input_ids
    assert ids.shape[1] > 4 * model.config.segment_size
    new = model.generate(ids, max_new_tokens=max_new_tokens)
    return eval_tokenizer.decode(new[0], skip_special_tokens=True), new.shape[1]


def test_streams_the_greedy_answer_token_by_token(adapter_dir, base_dir, eval_tokenizer, capsys,
                                                  monkeypatch):
    from transformers import TextStreamer

    puts = []
    original = TextStreamer.put
    monkeypatch.setattr(TextStreamer, "put", lambda self, value: (puts.append(value), original(self, value)))
    code, out, err = generate(capsys, "--model", str(adapter_dir), "--prompt", PROMPT,
                              "--max-new-tokens", "8", "--device", "cpu")
    assert code == 0, err
    text, count = expected_greedy(adapter_dir, base_dir, eval_tokenizer, 8)
    assert out == text + "\n"
    # One put for the (empty) prompt of inputs_embeds, then one per token as it is generated.
    assert len(puts) == 1 + count


@pytest.mark.parametrize("args", [[], ["--prompt-file", "-"]])
def test_prompt_from_stdin(adapter_dir, base_dir, eval_tokenizer, capsys, monkeypatch, args):
    monkeypatch.setattr("sys.stdin", io.StringIO(PROMPT))
    code, out, err = generate(capsys, "--model", str(adapter_dir), "--max-new-tokens", "5", *args)
    assert code == 0, err
    assert out == expected_greedy(adapter_dir, base_dir, eval_tokenizer, 5)[0] + "\n"


def test_prompt_file(adapter_dir, base_dir, eval_tokenizer, capsys, tmp_path):
    (tmp_path / "prompt.txt").write_text(PROMPT)
    code, out, err = generate(capsys, "--model", str(adapter_dir), "--prompt-file",
                              str(tmp_path / "prompt.txt"), "--max-new-tokens", "5")
    assert code == 0, err
    assert out == expected_greedy(adapter_dir, base_dir, eval_tokenizer, 5)[0] + "\n"


def test_sampling_with_a_seed_repeats(adapter_dir, capsys):
    def sample(seed: str) -> str:
        code, out, err = generate(capsys, "--model", str(adapter_dir), "--prompt", PROMPT,
                                  "--max-new-tokens", "12", "--do-sample", "--temperature", "5",
                                  "--top-k", "0", "--top-p", "1", "--seed", seed)
        assert code == 0, err
        return out

    first = sample("1")
    assert sample("1") == first
    assert sample("2") != first  # 12 tokens drawn from a flat distribution over 400


def test_dtype_reaches_the_model(adapter_dir, capsys, monkeypatch):
    seen = []
    original = RecurrentMemoryModel.generate

    def spy(self, *args, **kwargs):
        seen.append((self.memory.dtype, self.memory.device.type, kwargs.get("do_sample")))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RecurrentMemoryModel, "generate", spy)
    code, out, err = generate(capsys, "--model", str(adapter_dir), "--prompt", PROMPT,
                              "--max-new-tokens", "3", "--dtype", "bfloat16", "--device", "cpu")
    assert code == 0 and out.strip(), err
    assert seen == [(torch.bfloat16, "cpu", False)]


@pytest.mark.parametrize("args, message", [
    (["--device", "banana"], "unknown device 'banana'; use auto, cpu, cuda or cuda:N"),
    (["--device", "mps"], "unknown device 'mps'"),
    (["--temperature", "0", "--do-sample"], "--temperature must be > 0"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["--top-k", "-1"], "--top-k must be >= 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["--prompt", "  \n"], "the prompt is empty"),
    (["--prompt-file", "{tmp}/nope.txt"], "nope.txt: no such prompt file"),
    (["--chat"], "has no chat template; drop --chat"),
])
def test_bad_arguments_are_one_line_errors(adapter_dir, capsys, tmp_path, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    if "--prompt" not in args and "--prompt-file" not in args:
        args += ["--prompt", PROMPT]
    code, out, err = generate(capsys, "--model", str(adapter_dir), *args)
    assert code == 2 and out == ""
    # The last line: --chat is only checked once the tokenizer is loaded, after the weights' bar.
    last = err.splitlines()[-1]
    assert last.startswith("error: ") and message in last
    assert err.count("\n") == 1 or "--chat" in args


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_gpu_is_a_one_line_error(adapter_dir, capsys):
    code, _, err = generate(capsys, "--model", str(adapter_dir), "--prompt", PROMPT, "--device", "cuda")
    assert code == 2 and "no CUDA device is available here; use cpu" in err


def test_missing_or_wrong_model_directory(base_dir, capsys, tmp_path):
    code, _, err = generate(capsys, "--model", str(tmp_path / "missing"), "--prompt", "hi")
    assert code == 2 and err == f"error: model {tmp_path / 'missing'}: no such directory\n"
    code, _, err = generate(capsys, "--model", str(base_dir), "--prompt", "hi")
    assert code == 2 and "not a memory model" in err and err.count("\n") == 1


@pytest.mark.slow
def test_generate_from_saved_adapter_over_a_multi_segment_prompt(tmp_path, capsys, default_checkpoint):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rmt_scale import RMTConfig

    base = AutoModelForCausalLM.from_pretrained(default_checkpoint)
    base = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model = RecurrentMemoryModel.wrap(base, RMTConfig(num_mem_tokens=4, segment_size=64))
    tokenizer = AutoTokenizer.from_pretrained(default_checkpoint)
    model.save_pretrained(tmp_path / "adapter", base_model_name_or_path=str(default_checkpoint),
                          extra_files=lambda out: tokenizer.save_pretrained(str(out)))
    prompt = tmp_path / "prompt.txt"
    # About 300 tokens: five segments of 64, so the answer is produced after reading with memory.
    prompt.write_text("The weather was mild and the river ran slowly past the mill. " * 20
                      + "Question: what ran past the mill? Answer:")
    assert main(["generate", "--model", str(tmp_path / "adapter"), "--prompt-file", str(prompt),
                 "--max-new-tokens", "6"]) == 0
    answer = capsys.readouterr().out.strip()
    assert answer  # fresh LoRA (B = 0) and untrained memory: some text, not a particular one
    assert main(["generate", "--model", str(tmp_path / "adapter"), "--prompt", "Hi", "--chat",
                 "--max-new-tokens", "4"]) == 0
