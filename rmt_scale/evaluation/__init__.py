"""Evaluation: BABILong accuracy over tasks x lengths, per-segment perplexity, and their plots.

| module | job |
|---|---|
| `scoring.py` | the BABILong rule: the expected label is the only candidate named |
| `models.py` | load a memory model or a base checkpoint (full-attention baseline); generate |
| `accuracy.py` | `rmt-scale eval`: accuracy per (task, length), results.json / .csv |
| `perplexity.py` | `rmt-scale eval-lm`: loss per segment position with and without memory |
| `plots.py` | accuracy heatmap, per-segment loss plot, a run's loss curves (matplotlib, Agg) |
| `report.py` | `rmt-scale report`: report.md of a run, with its heatmap and loss curves |
"""

from rmt_scale.evaluation.accuracy import EvalReport, evaluate_babilong, parse_lengths, parse_tasks
from rmt_scale.evaluation.models import EvalModel, generate_answers, load_eval_model
from rmt_scale.evaluation.perplexity import SegmentReport, evaluate_segments
from rmt_scale.evaluation.plots import plot_accuracy_heatmap, plot_segment_losses
from rmt_scale.evaluation.scoring import (
    BABILONG_TASK_LABELS,
    candidate_labels,
    compare_answers,
    first_sentence,
)

__all__ = [
    "BABILONG_TASK_LABELS",
    "EvalModel",
    "EvalReport",
    "SegmentReport",
    "candidate_labels",
    "compare_answers",
    "evaluate_babilong",
    "evaluate_segments",
    "first_sentence",
    "generate_answers",
    "load_eval_model",
    "parse_lengths",
    "parse_tasks",
    "plot_accuracy_heatmap",
    "plot_segment_losses",
]
