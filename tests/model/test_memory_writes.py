"""benchmarks/memory_writes.py: the distributions it reads are the ones the soft-token write mixes,
and it finds the last place a qa1 story names."""

from __future__ import annotations

import sys

import torch

from benchmarks.memory_writes import last_place, write_distributions
from rmt_scale import RecurrentMemoryModel, RMTConfig
from tests.tiny_models import tiny_causal_lm
from tests.training.helpers import REPO, run

M, S = 3, 8


def test_write_distributions_are_what_the_next_segment_reads():
    for exclude in (False, True):
        model = RecurrentMemoryModel.wrap(tiny_causal_lm("llama"), RMTConfig(
            num_mem_tokens=M, segment_size=S, memory_norm="soft_token", write_inputs="initial",
            write_exclude_special=exclude)).eval()
        ids = torch.randint(4, 64, (1, 3 * S))
        probabilities = write_distributions(model, ids, segments=3)  # the memory segment 3 reads
        assert probabilities.shape == (M, model.base.get_input_embeddings().weight.shape[0])
        torch.testing.assert_close(probabilities.sum(-1), torch.ones(M))
        memory = model.initial_memory(1)
        for index in range(2):
            _, memory = model.cell(memory, ids[:, index * S : (index + 1) * S])
        embeddings = model.base.get_input_embeddings().weight
        torch.testing.assert_close(memory[0], probabilities @ embeddings)
        assert (probabilities[:, [0, 1, 2]] == 0).all() == exclude


def test_last_place_is_the_last_fact_not_the_last_mention():
    context = ("Mary went back to the garden. The cat sat in the kitchen. Daniel journeyed to the office. "
               "Tom hid in the garden.\nQuestion: Where is Mary?\nAnswer:")
    assert last_place(context) == "office"
    assert last_place("No facts here.") == ""


def test_an_adapter_that_is_not_there_is_one_line_and_no_traceback(tmp_path):
    doc = tmp_path / "results.md"
    code, output = run([sys.executable, "-m", "benchmarks", "memory-writes", "--adapter", str(tmp_path / "none"),
                        "--doc", str(doc)], REPO)
    assert code == 2
    assert f"error: model {tmp_path / 'none'}: no such directory" in output
    assert "Traceback" not in output and not doc.exists()
