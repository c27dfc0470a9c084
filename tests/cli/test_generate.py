"""`rmt-scale generate` answers with memory over a long prompt from a saved adapter directory."""

from __future__ import annotations

import pytest

from rmt_scale.cli.main import main


@pytest.mark.slow
def test_generate_from_saved_adapter_over_a_multi_segment_prompt(tmp_path, capsys, default_checkpoint):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rmt_scale import RecurrentMemoryModel, RMTConfig

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
    assert main(["generate", "--model", str(tmp_path / "missing"), "--prompt", "hi"]) == 2
    assert main(["generate", "--model", str(tmp_path / "adapter"), "--prompt-file", str(tmp_path / "nope.txt")]) == 2
