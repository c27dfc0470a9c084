"""Logits of an exported adapter, computed in a fresh process (run by test_export_distributed).

    python tests/export/logits.py ADAPTER_DIR FINAL_DIR

Loads ADAPTER_DIR with `RecurrentMemoryModel.from_pretrained` (base from rmt_base.json) and with
plain `peft.PeftModel.from_pretrained`, FINAL_DIR (what the training launch exported after its last
stage) onto the same random base rebuilt from the run's config, and prints the largest logit
differences as JSON.
"""

from __future__ import annotations

import json
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from rmt_scale import RecurrentMemoryModel
from rmt_scale.training.build import random_base
from rmt_scale.training.config import config_from_dict


def main(adapter: str, final: str) -> None:
    import yaml

    config = config_from_dict(yaml.safe_load(open(f"{adapter}/training_config.yaml")))
    ids = torch.randint(4, config.model.random.vocab_size, (2, 3 * config.rmt.segment_size + 5),
                        generator=torch.Generator().manual_seed(0))
    exported = RecurrentMemoryModel.from_pretrained(adapter).eval()
    reference = RecurrentMemoryModel.from_pretrained(final, base=random_base(config.model.random, torch.float32)).eval()
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(f"{adapter}/base"), adapter).eval()
    with torch.no_grad():
        got = exported(ids, return_logits=True).logits
        want = reference(ids, return_logits=True).logits
        # Without memory: the plain PEFT model vs the reference's own PEFT base.
        plain = peft(input_ids=ids).logits
        plain_want = reference.base(input_ids=ids).logits
    print(json.dumps({"memory_model": float((got - want).abs().max()),
                      "plain_peft": float((plain - plain_want).abs().max()),
                      "scale": float(want.abs().max())}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
