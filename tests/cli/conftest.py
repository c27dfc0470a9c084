"""Fixtures for the command-line tests: a tiny LoRA + memory adapter over the evaluation tests'
tiny base checkpoint (whose tokenizer the adapter finds through its recorded base path)."""

from __future__ import annotations

import pytest
import torch

from rmt_scale import RecurrentMemoryModel, RMTConfig
from tests.evaluation.conftest import base_dir, eval_tokenizer  # noqa: F401 (fixtures used here)


@pytest.fixture(scope="session")
def adapter_dir(tmp_path_factory, base_dir):  # noqa: F811 (the imported fixture)
    """LoRA with non-zero B (so the adapter changes the answers) and 2 memory tokens, segments of 16."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                          LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model = RecurrentMemoryModel.wrap(base, RMTConfig(num_mem_tokens=2, segment_size=16))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or name == "cell.memory":
                param.add_(torch.randn(param.shape, generator=generator) * 0.5)
    path = tmp_path_factory.mktemp("models") / "tiny-adapter"
    model.save_pretrained(path, base_model_name_or_path=str(base_dir))
    return path
