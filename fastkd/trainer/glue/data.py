"""The nine GLUE tasks: their TSV layouts in the original distribution, their labels, and loaders.

A task's examples become a ``datasets.Dataset`` with ``text_a``, ``text_b`` (``""`` for single-sentence
tasks) and ``label`` (int class index, or float score for STS-B).
"""

from __future__ import annotations

import csv
import io
import os
import sys
import warnings
from dataclasses import dataclass

from datasets import Dataset

from fastkd.trainer.preflight import read_text

csv.field_size_limit(sys.maxsize)


@dataclass(frozen=True)
class GlueTask:
    """A GLUE task: folder name, TSV columns (header names, or indices for header-less CoLA), labels."""

    name: str
    folder: str
    text_a: str | int
    text_b: str | int | None
    label: str | int
    labels: tuple[str, ...] | None  # None: regression
    hub_columns: tuple[str, str | None]
    eval_splits: tuple[str, ...] = ("dev",)
    header: bool = True
    benchmark: str = "glue"  # "superglue": jsonl files, see fastkd.trainer.superglue.data

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_regression(self) -> bool:
        return self.labels is None


TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        GlueTask("cola", "CoLA", 3, None, 1, ("0", "1"), ("sentence", None), header=False),
        GlueTask("sst2", "SST-2", "sentence", None, "label", ("0", "1"), ("sentence", None)),
        GlueTask("mrpc", "MRPC", "#1 String", "#2 String", "Quality", ("0", "1"), ("sentence1", "sentence2")),
        GlueTask("stsb", "STS-B", "sentence1", "sentence2", "score", None, ("sentence1", "sentence2")),
        GlueTask(
            "qqp", "QQP", "question1", "question2", "is_duplicate", ("0", "1"), ("question1", "question2")
        ),
        GlueTask(
            "mnli",
            "MNLI",
            "sentence1",
            "sentence2",
            "gold_label",
            ("entailment", "neutral", "contradiction"),
            ("premise", "hypothesis"),
            eval_splits=("dev_matched", "dev_mismatched"),
        ),
        GlueTask(
            "qnli",
            "QNLI",
            "question",
            "sentence",
            "label",
            ("entailment", "not_entailment"),
            ("question", "sentence"),
        ),
        GlueTask(
            "rte",
            "RTE",
            "sentence1",
            "sentence2",
            "label",
            ("entailment", "not_entailment"),
            ("sentence1", "sentence2"),
        ),
        GlueTask("wnli", "WNLI", "sentence1", "sentence2", "label", ("0", "1"), ("sentence1", "sentence2")),
    )
}
HUB_SPLITS = {"train": "train", "dev": "validation", "dev_matched": "validation_matched"}
HUB_SPLITS["dev_mismatched"] = "validation_mismatched"


def get_task(name: str) -> GlueTask:
    """The task called ``name`` (case-insensitive; ``sst-2``/``sts-b`` spellings accepted).

    The SuperGLUE tasks (``fastkd.trainer.superglue.data.SUPERGLUE_TASKS``) resolve here too;
    SuperGLUE RTE is ``superglue_rte`` (plain ``rte`` is GLUE RTE)."""
    key = name.lower().replace("-", "")
    if key not in TASKS:
        from fastkd.trainer.superglue.data import SUPERGLUE_TASKS, UNSUPPORTED, registry_key

        if key in SUPERGLUE_TASKS or key in UNSUPPORTED:
            return SUPERGLUE_TASKS[registry_key(key)]
        known = sorted(TASKS) + sorted(SUPERGLUE_TASKS)
        raise ValueError(f"unknown GLUE task {name!r}; expected one of {known} (GLUE and SuperGLUE)")
    return TASKS[key]


def _column(task: GlueTask, header: list[str] | None, column: str | int, path: str) -> int:
    if isinstance(column, int):
        return column
    if header is None or column not in header:
        raise ValueError(f"{path}: missing column {column!r} for task {task.name} (header: {header})")
    return header.index(column)


def _label(task: GlueTask, raw: str, path: str, line: int) -> int | float:
    if task.labels is None:
        return float(raw)
    if raw not in task.labels:
        raise ValueError(
            f"{path}:{line}: label {raw!r} is not one of {list(task.labels)} for task {task.name}"
        )
    return task.labels.index(raw)


def read_tsv(task: GlueTask, path: str) -> Dataset:
    """Read one GLUE TSV file in ``task``'s original layout (unquoted tab-separated, header unless CoLA)."""
    if not os.path.isfile(path):
        raise ValueError(f"GLUE file not found: {path}")
    text = io.StringIO(read_text(path), newline="")
    rows = list(csv.reader(text, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = rows.pop(0) if task.header and rows else None
    cols = [_column(task, header, c, path) for c in (task.text_a, task.text_b, task.label) if c is not None]
    if not task.header and rows and len(rows[0]) <= max(cols):
        raise ValueError(f"{path}: task {task.name} needs {max(cols) + 1} columns, row 1 has {len(rows[0])}")
    data: dict[str, list] = {"text_a": [], "text_b": [], "label": []}
    skipped = 0
    for line, row in enumerate(rows, start=2 if header else 1):
        if len(row) <= max(cols):
            skipped += 1
            continue
        data["text_a"].append(row[_column(task, header, task.text_a, path)])
        data["text_b"].append(
            row[_column(task, header, task.text_b, path)] if task.text_b is not None else ""
        )
        data["label"].append(_label(task, row[_column(task, header, task.label, path)], path, line))
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} malformed rows", stacklevel=2)
    return Dataset.from_dict(data)


def _task_dir(task: GlueTask, data_dir: str) -> str:
    nested = os.path.join(data_dir, task.folder)
    return nested if os.path.isdir(nested) else data_dir


def _from_hub(task: GlueTask, split: str) -> Dataset:
    import datasets

    try:
        ds = datasets.load_dataset("glue", task.name, split=HUB_SPLITS[split])
    except Exception as err:  # network, hub or cache errors all mean "not reachable"
        raise ValueError(
            f"cannot load GLUE {task.name} from the HuggingFace hub ({type(err).__name__}: {err}); "
            "pass --data-dir with the GLUE TSV files"
        ) from err
    a, b = task.hub_columns
    return Dataset.from_dict(
        {"text_a": ds[a], "text_b": ds[b] if b else [""] * len(ds), "label": ds["label"]}
    )


def load_split(task: GlueTask, split: str, data_dir: str | None, max_samples: int | None = None) -> Dataset:
    """``split`` (train, dev, dev_matched, dev_mismatched) from ``data_dir`` TSVs or the hub; never empty."""
    if task.benchmark == "superglue":
        from fastkd.trainer.superglue.data import load_split as load_superglue

        ds = load_superglue(task, split, data_dir)
    elif data_dir is not None:
        ds = read_tsv(task, os.path.join(_task_dir(task, data_dir), f"{split}.tsv"))
    else:
        ds = _from_hub(task, split)
    if max_samples is not None:
        ds = ds.select(range(min(max_samples, len(ds))))
    if len(ds) == 0:
        raise ValueError(f"GLUE {task.name} {split} split is empty (data_dir={data_dir})")
    return ds


def load_glue(
    task: GlueTask, data_dir: str | None, max_train: int | None = None, max_eval: int | None = None
) -> tuple[Dataset, dict[str, Dataset]]:
    """The train split and the task's dev split(s) (MNLI: dev_matched and dev_mismatched)."""
    train = load_split(task, "train", data_dir, max_train)
    evals = {split: load_split(task, split, data_dir, max_eval) for split in task.eval_splits}
    return train, evals


def tokenize(ds: Dataset, tokenizer, max_length: int = 128) -> Dataset:
    """Tokenize (text_a, text_b) pairs; keeps ``labels``."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        pair = batch["text_b"] if any(batch["text_b"]) else None
        enc = tokenizer(batch["text_a"], pair, truncation=True, max_length=max_length)
        enc["labels"] = batch["label"]
        return enc

    return ds.map(encode, batched=True, remove_columns=ds.column_names)
