"""Data for recurrent-memory training: bAbI, BABILong samples, user documents and QA, collation."""

from rmt_scale.data.babi import (
    BabiSample,
    find_task_file,
    format_babi_lines,
    load_babi_dir,
    parse_babi_file,
    parse_babi_lines,
    split_by_story,
)
from rmt_scale.data.babilong import (
    LENGTHS,
    PROMPT_TEMPLATE,
    TARGET_TEMPLATE,
    BabilongSample,
    TokenCounter,
    build_babilong_sample,
    every_person_questions,
    format_prompt,
    format_target,
    parse_length,
    task_labels,
)
from rmt_scale.data.babilong_official import (
    OFFICIAL_FIELDS,
    babilong_layout,
    babilong_official_dataset,
    babilong_sources,
)
from rmt_scale.data.babilong_prompts import BABILONG_PROMPTS
from rmt_scale.data.buckets import (
    LONG_SAMPLE_POLICIES,
    FitReport,
    bucket_counts,
    fit_to_length,
    sample_segments,
    stage_samples,
)
from rmt_scale.data.collate import LeftPadCollator
from rmt_scale.data.documents import (
    SHORT_DOCUMENT_POLICIES,
    TextWindows,
    WindowPlan,
    document_dataset,
    plan_windows,
    window_counts,
)
from rmt_scale.data.generator import GENERATED_TASKS, generate_babi
from rmt_scale.data.hub import load_babi_hub
from rmt_scale.data.lm import lm_dataset
from rmt_scale.data.noise import (
    BookNoise,
    FillerNoise,
    NoiseSource,
    load_noise,
    read_book,
    split_sentences,
    strip_gutenberg,
)
from rmt_scale.data.pipeline import babilong_dataset, load_babi_samples
from rmt_scale.data.qa import DEFAULT_FIELDS, qa_dataset
from rmt_scale.data.sources import Source, resolve_sources
from rmt_scale.data.splits import holdout_split
from rmt_scale.data.synthetic import KeyRecallDataset, key_recall_accuracy
from rmt_scale.data.templates import TEMPLATE_NAMES, PromptTemplate, babilong_prompt, get_template

__all__ = [
    "BABILONG_PROMPTS",
    "DEFAULT_FIELDS",
    "LONG_SAMPLE_POLICIES",
    "OFFICIAL_FIELDS",
    "SHORT_DOCUMENT_POLICIES",
    "TEMPLATE_NAMES",
    "FitReport",
    "PromptTemplate",
    "Source",
    "TextWindows",
    "WindowPlan",
    "babilong_layout",
    "babilong_official_dataset",
    "babilong_prompt",
    "babilong_sources",
    "bucket_counts",
    "document_dataset",
    "fit_to_length",
    "get_template",
    "holdout_split",
    "plan_windows",
    "qa_dataset",
    "resolve_sources",
    "sample_segments",
    "stage_samples",
    "window_counts",
    "GENERATED_TASKS",
    "KeyRecallDataset",
    "key_recall_accuracy",
    "LENGTHS",
    "PROMPT_TEMPLATE",
    "TARGET_TEMPLATE",
    "BabiSample",
    "BabilongSample",
    "BookNoise",
    "FillerNoise",
    "LeftPadCollator",
    "NoiseSource",
    "TokenCounter",
    "babilong_dataset",
    "build_babilong_sample",
    "every_person_questions",
    "find_task_file",
    "format_babi_lines",
    "format_prompt",
    "format_target",
    "generate_babi",
    "lm_dataset",
    "load_babi_dir",
    "load_babi_hub",
    "load_babi_samples",
    "load_noise",
    "parse_babi_file",
    "parse_babi_lines",
    "parse_length",
    "read_book",
    "split_by_story",
    "split_sentences",
    "strip_gutenberg",
    "task_labels",
]
