"""Training on a base checkpoint that ships its own code never runs that code, nor does exporting
the result (issue 11, item 2; tests/test_remote_code.py covers eval, generate and merge).

The base is tests/security_fixtures.py's checkpoint: config.json maps the architecture (auto_map)
to a module in the directory that writes a marker file when imported. Every command answers "y"
to transformers' "run the custom code?" prompt, as an attacker would wish.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.security_fixtures import (
    YES_TO_EVERY_PROMPT,
    attack_env,
    cli_command,
    write_remote_code_checkpoint,
)

TRAIN = ["curriculum.stages.0.steps=2", "curriculum.stages.1.steps=2", "curriculum.stages.1.advance=null",
         "batch.micro_batch_size=2", "batch.global_batch_size=2", "data.valid_samples=2", "eval.every_steps=0",
         "logging.progress_bar=false", "logging.tensorboard=false", "finetune.modules=[]"]


def run(command: list[str], root) -> subprocess.CompletedProcess:
    return subprocess.run(command, input=YES_TO_EVERY_PROMPT, capture_output=True, text=True, cwd=root,
                          env=attack_env(root), timeout=300)


def train(base, root) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "rmt_scale.cli.train_worker", "--config", "tiny", "model.init=pretrained",
                f"model.path={base}", f"output_dir={root / 'run'}", *TRAIN], root)


def test_training_refuses_a_base_that_is_only_code(tmp_path):
    checkpoint = write_remote_code_checkpoint(tmp_path)
    result = train(checkpoint.path, tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
    assert "Python code shipped in the directory (auto_map), which rmt-scale does not run" in errors[0]
    assert not checkpoint.code_ran()


def test_training_and_export_use_the_library_class_of_a_known_architecture(tmp_path):
    """A Llama checkpoint that also maps itself to its own code: transformers' Llama is used."""
    checkpoint = write_remote_code_checkpoint(tmp_path)
    config = json.loads((checkpoint.path / "config.json").read_text())
    config.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (checkpoint.path / "config.json").write_text(json.dumps(config))
    result = train(checkpoint.path, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").is_file()
    result = run(cli_command("export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "adapter")),
                 tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not checkpoint.code_ran()
    # --overwrite replaces an earlier export, never the base the adapter is built on.
    before = sorted(path.name for path in checkpoint.path.iterdir())
    result = run(cli_command("export", "--checkpoint", str(tmp_path / "run"), "--out", str(checkpoint.path),
                             "--overwrite"), tmp_path)
    assert result.returncode == 2 and "would delete that input" in result.stderr, result.stderr[-3000:]
    assert sorted(path.name for path in checkpoint.path.iterdir()) == before


def test_export_ignores_trust_remote_code_written_in_a_run_directory(tmp_path):
    """A run directory is data: a config.yaml that says model.trust_remote_code=true (with a
    manifest that matches, as an attacker can write) does not make `export` run the base's code."""
    import yaml

    from rmt_scale.training.run_dir import write_manifest

    checkpoint = write_remote_code_checkpoint(tmp_path)
    config = json.loads((checkpoint.path / "config.json").read_text())
    (checkpoint.path / "config.json").write_text(
        json.dumps({**config, "model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    assert train(checkpoint.path, tmp_path).returncode == 0
    (checkpoint.path / "config.json").write_text(json.dumps(config))  # back to code only
    for saved in (tmp_path / "run" / "checkpoints").glob("checkpoint-*"):
        values = yaml.safe_load((saved / "config.yaml").read_text())
        values["model"]["trust_remote_code"] = True
        (saved / "config.yaml").write_text(yaml.safe_dump(values))
        write_manifest(saved)
    result = run(cli_command("export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "adapter")),
                 tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
    assert "--trust-remote-code" in errors[0] or "does not run" in errors[0], errors[0]
    assert not checkpoint.code_ran() and not (tmp_path / "adapter").exists()
