"""Building the trained model: what is trainable, LoRA before wrapping, the checkpointing switches."""

from __future__ import annotations

import pytest
import torch

from rmt_scale.errors import ConfigError
from rmt_scale.training.build import build_model, check_base_path, describe_trainable, random_base
from rmt_scale.training.config import RandomModelConfig, load_train_config
from tests.training.helpers import TINY


def config(*overrides):
    return load_train_config(TINY, ["finetune.modules=[]", *overrides])


def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_lora_and_memory_are_all_that_trains():
    model = build_model(config(), "fp32")
    names = trainable(model)
    assert "cell.memory" in names and all(n == "cell.memory" or "lora_" in n for n in names)
    count, total, kinds = describe_trainable(model)
    assert kinds == ["lora", "memory"] and 0 < count < total
    # LoRA was attached before wrapping: the base is a PEFT model, so PEFT save/load works.
    assert hasattr(model.base, "peft_config")


def test_modules_to_save_and_full_finetuning():
    names = trainable(build_model(config("finetune.modules=[lm_head]"), "fp32"))
    assert any("lm_head.modules_to_save" in n for n in names)
    full = build_model(config("lora.enabled=false", "finetune.modules=[embed_tokens]"), "fp32")
    assert trainable(full) == {"cell.memory", "cell.base.model.embed_tokens.weight"}
    everything = build_model(config("lora.enabled=false", "finetune.modules=[all]"), "fp32")
    assert trainable(everything) == {n for n, _ in everything.named_parameters()}
    with pytest.raises(ConfigError, match=r"finetune.modules \['nope'\] match no module"):
        build_model(config("lora.enabled=false", "finetune.modules=[nope]"), "fp32")
    with pytest.raises(ConfigError, match="lora.target_modules"):
        build_model(config("lora.target_modules=[c_attn]"), "fp32")


def test_same_config_same_weights_and_the_base_ignores_the_run_seed():
    a, b = build_model(config(), "fp32"), build_model(config(), "fp32")
    c = build_model(config("seed=1"), "fp32")
    for (name, x), y, z in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(x, y)
        if "lora_A" not in name:  # only the adapter init depends on the run seed
            assert torch.equal(x, z), name


def test_base_gradient_checkpointing_switch():
    model = build_model(config("model.gradient_checkpointing=true"), "fp32").train()
    lm = model.cell.causal_lm
    assert getattr(lm, "is_activation_checkpointing", None) or lm.is_gradient_checkpointing
    ids = torch.randint(4, 64, (2, 40))
    model(ids, labels=ids).loss.backward()
    assert model.memory.grad is not None and model.memory.grad.abs().sum() > 0


def test_random_bases_of_each_architecture():
    for arch in ("llama", "mistral", "qwen2", "gpt2"):
        base = random_base(RandomModelConfig(arch=arch, hidden_size=32), torch.float32)
        assert base.get_input_embeddings().weight.shape == (64, 32)


def test_pretrained_checkpoint_path_checks(tmp_path):
    with pytest.raises(ConfigError, match="no such directory"):
        check_base_path(config("model.init=pretrained", f"model.path={tmp_path / 'missing'}").model)
    with pytest.raises(ConfigError, match="no config.json"):
        check_base_path(config("model.init=pretrained", f"model.path={tmp_path}").model)


def test_pretrained_and_4bit_bases_load_from_a_local_directory(tmp_path):
    random_base(RandomModelConfig(hidden_size=64), torch.float32).save_pretrained(tmp_path)
    model = build_model(config("model.init=pretrained", f"model.path={tmp_path}"), "fp32")
    assert hasattr(model.base, "peft_config")
    pytest.importorskip("bitsandbytes")
    quantized = build_model(config("model.init=pretrained", f"model.path={tmp_path}", "model.load_in_4bit=true"), "fp32")
    layer = quantized.cell.causal_lm.model.layers[0].self_attn.q_proj.base_layer
    assert type(layer).__name__ == "Linear4bit"
    ids = torch.randint(4, 64, (1, 40))
    quantized.train()(ids, labels=ids).loss.backward()
    assert quantized.memory.grad is not None


def test_trust_remote_code_is_off_unless_the_config_asks(tmp_path, monkeypatch):
    from rmt_scale.training import build

    random_base(RandomModelConfig(hidden_size=64), torch.float32).save_pretrained(tmp_path)
    asked = []

    def load(path, trust_remote_code=False, **kwargs):
        asked.append(trust_remote_code)
        return random_base(RandomModelConfig(hidden_size=64), kwargs["dtype"])

    monkeypatch.setattr(build, "load_causal_lm", load)
    for value in ("false", "true"):
        build_model(config("model.init=pretrained", f"model.path={tmp_path}", f"model.trust_remote_code={value}"),
                    "fp32")
    assert asked == [False, True]
