"""`rmt-scale export`: a DeepSpeed training checkpoint -> a standard PEFT adapter with memory.

    ckpt = resolve_checkpoint(RUN_DIR or RUN_DIR/checkpoints/checkpoint-N)   # newest complete one
    weights = distributed.read_trainable_weights(ckpt / "deepspeed")         # any ZeRO stage, offline
    model = build the run's model from ckpt/config.yaml, load `weights` into it
    write ADAPTER_DIR atomically:
      adapter_config.json, adapter_model.safetensors    plain `PeftModel.from_pretrained(base, dir)`
      memory.safetensors, rmt_config.json, rmt_base.json
      base/                                             only for a random (`model.init: random`) base
      tokenizer files                                   copied from the base checkpoint, if it has them
      training_config.yaml, trainer_state.json, README.md (model card)

The output is written to a temporary sibling directory and renamed into place, so a failure at any
point (corrupt checkpoint, missing base) leaves nothing at the output path. Nothing is unpickled
beyond weights_only=True loads of the DeepSpeed files.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
import yaml

from rmt_scale.errors import CheckpointError, InputError
from rmt_scale.evaluation.results_files import accuracy_table, merge_results, samples_sentence
from rmt_scale.model.loading import TOKENIZER_FILES, cached_model_dir
from rmt_scale.model.outputs import refuse_to_replace
from rmt_scale.model.saving import save_memory_model
from rmt_scale.training import run_dir
from rmt_scale.training.config import TrainConfig
from rmt_scale.training.curriculum_config import segments_range
from rmt_scale.training.metrics import read_metrics
from rmt_scale.training.run_dir import read_checkpoint_config

logger = logging.getLogger(__name__)

BASE_DIR = "base"
TRAINING_CONFIG = "training_config.yaml"
EVAL_RESULTS = "eval_results.json"
CARD = "README.md"


# --- which checkpoint --------------------------------------------------------------------------


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint directory `path` names: a run directory (its newest complete checkpoint) or
    one checkpoint-NNNNNN directory (which must be complete)."""
    path = Path(path).expanduser()
    if path.name.endswith(".tmp"):
        raise CheckpointError(f"{path}: a checkpoint still being written (or cut off by a crash); "
                          "pick a complete one or the run directory")
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such run or checkpoint directory")
    if (path / "deepspeed").is_dir() or (path / run_dir.TRAINER_STATE).is_file():
        if not run_dir.is_complete(path):
            raise CheckpointError(f"{path}: not a complete checkpoint (no '{run_dir.COMPLETE}' marker or "
                              f"{run_dir.TRAINER_STATE}); the save was interrupted")
        run_dir.verify_checkpoint(path)  # its manifest: sizes and checksums
        return path
    if run_dir.checkpoint_root(path).is_dir() or (path / run_dir.CONFIG_FILE).is_file():
        # The newest checkpoint that passes its manifest; a damaged newer one is named in a warning.
        latest = run_dir.usable_checkpoint(path, action="exporting")
        if latest is None:
            raise CheckpointError(f"{path}: no complete checkpoint under {run_dir.checkpoint_root(path)}")
        return latest
    raise CheckpointError(f"{path}: neither a run directory (with checkpoints/) nor a checkpoint directory")


# --- export ------------------------------------------------------------------------------------


def export_checkpoint(checkpoint: str | Path, out: str | Path, base_path: str | None = None,
                      eval_results: str | Path | list | None = None, trust_remote_code: bool = False,
                      include_tokenizer: bool = True) -> Path:
    """Write the adapter + memory of a training checkpoint to `out` (replaced atomically).

    Args:
        checkpoint: A run directory or one checkpoint directory.
        out: The adapter directory to write.
        base_path: The base checkpoint directory, when it is not where the training config says
            (e.g. another machine). Ignored for random bases.
        eval_results: A results.json of `rmt-scale eval` for the model card, or a list of them
            (one model's cells at other lengths, merged into one eval_results.json); by default
            RUN_DIR/eval/results.json when present.
        trust_remote_code: Run Python code shipped in the base checkpoint. The run's config.yaml
            is data like any file in a run directory, so its model.trust_remote_code is not
            obeyed here: only the caller (the user's flag, or the trainer that was told so) decides.
        include_tokenizer: Copy the base's tokenizer files into `out` (a few MB for a large
            vocabulary). Without them the adapter loads its base's tokenizer, as it loads the base.

    Returns:
        The checkpoint directory that was exported.
    """
    from rmt_scale.distributed import read_trainable_weights
    from rmt_scale.training.build import build_model, random_base

    checkpoint = resolve_checkpoint(checkpoint)
    config = read_checkpoint_config(checkpoint)
    state = run_dir.read_trainer_state(checkpoint)
    if base_path is not None and config.model.init == "pretrained":
        config.model.path = str(base_path)
    # The export never trains: no 4-bit (the LoRA keys are the same), no activation checkpointing.
    config.model.load_in_4bit = False
    config.model.gradient_checkpointing = False
    config.model.trust_remote_code = trust_remote_code
    if config.model.init == "pretrained":
        # `out` is replaced whole: it must not be, or hold, the base the adapter is built on.
        refuse_to_replace(out, overwrite=True, inputs=[config.model.resolved_path(), tokenizer_source(config)])
    weights = read_trainable_weights(checkpoint / "deepspeed")
    logger.info("read %d trainable tensors from %s", len(weights), checkpoint)
    precision = state.get("precision", "fp32")
    model = build_model(config, precision)
    load_trainable(model, weights, checkpoint)

    run_directory = checkpoint.parent.parent
    random = config.model.init == "random"
    full = not config.lora.enabled and config.finetune.trains_everything()
    # A base named by its Hub id is recorded by the id: the adapter then loads on any machine
    # with that model cached, not only where the training machine's snapshot path exists.
    base_record = BASE_DIR if (random or full) else (config.model.model_id() or str(config.model.resolved_path()))
    tokenizer_dir = tokenizer_source(config)
    results = eval_results_files(run_directory, eval_results)
    # One results.json is shipped as written (with every generated answer); several are merged.
    evaluation = merge_results(results) if len(results) > 1 else (_read_json(results[0]) if results else None)

    def extra_files(tmp: Path) -> None:
        if full:  # the whole base trained: it is the base now
            model.cell.causal_lm.save_pretrained(str(tmp / BASE_DIR))
        elif random:  # rebuilt from its seed, exactly as every training launch built it
            from rmt_scale.training.build import model_dtype

            random_base(config.model.random, model_dtype(config.model, precision)).save_pretrained(str(tmp / BASE_DIR))
        copied = copy_tokenizer(tokenizer_dir, tmp) if tokenizer_dir and include_tokenizer else []
        (tmp / TRAINING_CONFIG).write_text(config.to_yaml())
        shutil.copyfile(checkpoint / run_dir.TRAINER_STATE, tmp / run_dir.TRAINER_STATE)
        if len(results) == 1:
            shutil.copyfile(results[0], tmp / EVAL_RESULTS)
        elif results:
            (tmp / EVAL_RESULTS).write_text(json.dumps(evaluation, indent=2) + "\n")
        if copied:
            tokenizer = "included"
        elif not include_tokenizer:
            tokenizer = "not included: loaded from the base (`export --no-tokenizer`)"
        else:
            tokenizer = "not included (the base checkpoint has none" + (f" at `{tokenizer_dir}`)" if tokenizer_dir else ")")
        card = model_card(config, state, checkpoint, base_record, tokenizer, last_eval(run_directory, state), evaluation)
        (tmp / CARD).write_text(card)  # replaces PEFT's template card

    modules = config.finetune.modules if not config.lora.enabled and not full else ()
    save_memory_model(model, out, base_model_name_or_path=base_record, extra_files=extra_files,
                      finetuned_modules=modules)
    logger.info("exported %s to %s", checkpoint, out)
    return checkpoint


def load_trainable(model: torch.nn.Module, weights: dict[str, torch.Tensor], where: Path) -> None:
    """Put the checkpoint's trainable weights into `model`; every trainable one must be there.

    The checkpoint's fp32 values are kept as they are (`assign`), not rounded to the base dtype.
    """
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(trainable) - set(weights))
    unexpected = sorted(set(weights) - set(trainable))
    if missing or unexpected:
        raise CheckpointError(f"{where}: the checkpoint's weights do not match the model its config builds "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for name, value in weights.items():
        if value.numel() == 0 or tuple(value.shape) != tuple(trainable[name].shape):
            raise CheckpointError(f"{where}: {name} is saved with shape {tuple(value.shape)}, the model has "
                              f"{tuple(trainable[name].shape)} (an empty ZeRO-3 placeholder?)")
        if not torch.isfinite(value).all():  # an adapter of NaNs would load and generate garbage
            raise CheckpointError(f"{where}: {name} holds NaN or infinite values (the training diverged); "
                                  "export an earlier checkpoint, or train again with a lower optimizer.lr")
    model.load_state_dict(weights, strict=False, assign=True)


def tokenizer_source(config: TrainConfig) -> Path | None:
    """The directory of the tokenizer the run used, if it has one on disk."""
    candidates = []
    if config.data.kind == "babilong" and config.data.babilong.tokenizer:
        candidates.append(Path(config.data.babilong.tokenizer).expanduser())
    if config.data.tokenizer:  # a directory or a model id in the local Hugging Face cache
        path = Path(config.data.tokenizer).expanduser()
        candidates.append(path if path.exists() else cached_model_dir(config.data.tokenizer))
    if config.model.init == "pretrained":
        candidates.append(config.model.resolved_path())
    for path in candidates:
        if path is not None and (path / "tokenizer_config.json").is_file():
            return path
    return None


def copy_tokenizer(source: Path, target: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
            copied.append(name)
    return copied


def eval_results_files(run_dir: Path, given: str | Path | list | None) -> list[Path]:
    if given is not None:
        # Only found here: they are read (and their JSON checked) once, for the card.
        paths = [Path(p).expanduser() for p in ([given] if isinstance(given, (str, Path)) else given)]
        for path in paths:
            if not path.is_file():
                raise CheckpointError(f"--eval-results {path}: no such file")
        return paths
    default = run_dir / "eval" / "results.json"
    return [default] if default.is_file() else []


def last_eval(run_directory: Path, state: dict) -> dict | None:
    """The last validation record at or before the checkpoint's step (metrics.jsonl)."""
    step = state.get("curriculum", {}).get("global_step")
    try:
        records = read_metrics(run_directory, "eval")
    except InputError:  # a run without metrics.jsonl: the card says so
        return None
    found = [r for r in records if step is None or r.get("step", 0) <= step]
    return found[-1] if found else None


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not a readable JSON file ({err})") from None


def evaluation_lines(evaluation) -> list[str]:
    """The card's evaluation: accuracy against length, then what was evaluated and on what data."""
    try:
        table = [accuracy_table(evaluation), "",
                 samples_sentence(evaluation["settings"].get("samples", "?")) + "; every cell, and "
                 "every generated answer where one evaluation gave them, in `eval_results.json`.", ""]
    except (KeyError, TypeError, AttributeError):  # not the results of `rmt-scale eval`
        table = []
    about = {key: evaluation[key] for key in ("model", "settings") if isinstance(evaluation, dict) and key in evaluation}
    text = json.dumps(about or evaluation, indent=2)
    if len(text) > 20000:
        text = text[:20000] + "\n... (truncated; full results in eval_results.json)"
    return table + ["From `eval_results.json`:", "", "```json", text, "```"]


# --- model card --------------------------------------------------------------------------------


def model_card(config: TrainConfig, state: dict, checkpoint: Path, base_record: str, tokenizer: str,
               metrics: dict | None, evaluation) -> str:
    """README.md: what the adapter is, what it was trained on, how far, and how well."""
    model = config.model
    if model.init == "random":
        spec = model.random
        base_line = (f"a random `{spec.arch}` model built from `model.random` (seed {spec.seed}, hidden "
                     f"{spec.hidden_size}, {spec.num_layers} layers), saved in `{BASE_DIR}/`")
        base_meta = ""
    elif base_record == BASE_DIR:
        base_line = f"`{model.path}`, fully fine-tuned; the trained weights are in `{BASE_DIR}/`"
        base_meta = str(model.path)
    else:
        base_line = f"`{base_record}`"
        base_meta = base_record
    curriculum = state.get("curriculum", {})
    stages = config.curriculum.stages
    reached = min(int(curriculum.get("stage", 0)), len(stages))
    done = reached >= len(stages)
    rows = "\n".join(
        f"| {i + 1} | {segments_range(s.fewest_segments, s.num_segments)} | "
        f"{f'{s.steps} steps' if s.steps else f'{s.tokens:,} tokens'} | "
        f"{'done' if i < reached else ('in progress' if i == reached else 'not reached')} |"
        for i, s in enumerate(stages))
    lora = config.lora
    front = {"library_name": "peft" if lora.enabled else "transformers", "pipeline_tag": "text-generation",
             "tags": ["rmt-scale", "recurrent-memory"] + (["lora"] if lora.enabled else [])}
    if base_meta:
        front["base_model"] = base_meta
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
        "# Recurrent memory adapter (rmt-scale)", "",
        f"Exported from `{checkpoint}` (global step {curriculum.get('global_step', '?')}, "
        f"{state.get('world_size', '?')} rank(s), ZeRO stage {state.get('zero_stage', '?')}, "
        f"{state.get('precision', '?')}).", "",
        f"- **Base model:** {base_line}",
        f"- **Memory:** {config.rmt.num_mem_tokens} memory tokens, segments of {config.rmt.segment_size} "
        f"tokens (`rmt_config.json`, `memory.safetensors`)",
        (f"- **LoRA:** r={lora.r}, alpha={lora.alpha}, dropout={lora.dropout}, targets "
         f"{', '.join(lora.target_modules)}" if lora.enabled else "- **LoRA:** none"),
        f"- **Trained in full:** {', '.join(config.finetune.modules) or 'nothing else'}",
        f"- **Data:** {config.data.kind}" + (f" ({config.data.babilong.task})" if config.data.kind == "babilong" else "")
        + (f" ({', '.join(config.data.user_sources())})" if config.data.kind in ("text", "qa") else ""),
        f"- **Tokenizer:** {tokenizer}",
        "- **Training config:** `training_config.yaml`; trainer state: `trainer_state.json`", "",
        "## Curriculum", "",
        f"{'All stages done' if done else f'Stopped in stage {reached + 1} of {len(stages)}'}.", "",
        "| stage | segments | length | status |", "|---|---|---|---|", rows, "",
        "## Final validation", "",
    ]
    if metrics:
        lines.append(f"At step {metrics.get('step')} ({metrics.get('num_segments')} segments): "
                     f"loss {metrics.get('loss', float('nan')):.4f}, accuracy {metrics.get('accuracy', float('nan')):.3f}.")
    else:
        lines.append("No validation record found (metrics.jsonl).")
    lines += ["", "## Evaluation", ""]
    if evaluation is not None:
        lines += evaluation_lines(evaluation)
    else:
        lines.append("No evaluation results were given (`rmt-scale export --eval-results FILE`).")
    lines += ["", "## Use", "", "```python",
              "from rmt_scale import RecurrentMemoryModel",
              "model = RecurrentMemoryModel.from_pretrained(\"THIS_DIR\")  # base from rmt_base.json",
              "# or: RecurrentMemoryModel.from_pretrained(\"THIS_DIR\", base_model_name_or_path=\"/path/to/base\")",
              "```", "",
              "The LoRA adapter alone also loads with `peft.PeftModel.from_pretrained(base, \"THIS_DIR\")`.",
              "`rmt-scale merge --adapter THIS_DIR --out MERGED` folds it into the base weights.", ""]
    return "\n".join(lines)
