"""SuperGLUE tasks: the original jsonl layouts, the HuggingFace ``super_glue`` rows, and the input
formats that turn each example into a ``(text_a, text_b, label)`` classification example.

Every source is first brought to the flat row layout of ``datasets.load_dataset("super_glue", task)``
(WSC's ``target`` spans lifted to the top level, MultiRC expanded to one row per answer, labels as
class indices) and then formatted:

- BoolQ ``(question, passage)``; CB and RTE ``(premise, hypothesis)``;
- COPA: ``("<premise> What was the <cause|effect>?", "<choice1> or <choice2>")``, label = the right
  choice (a 2-way task over one input holding both choices);
- WiC: ``("<word> : <sentence1>", "<sentence2>")``;
- WSC: the sentence with span 1 marked ``* ... *`` and span 2 (the pronoun) marked ``# ... #``;
- MultiRC: ``(paragraph, "<question> <answer>")`` per answer, binary, with ``group`` =
  ``"<paragraph>-<question>"`` so that exact match is computed per question.

The released MPDistil code (github.com/notmyname16/MPDistil, ``utils_superglue.py``) reads its own
pre-processed TSV files and tokenizes only their first two text columns; the formats above put every
field of the example in the input instead (COPA's second choice, WiC's second sentence, WSC's spans).
ReCoRD and the diagnostic sets (AX-b, AX-g) are not supported.
"""

from __future__ import annotations

import json
import os
from typing import Any

from datasets import Dataset

from fastkd.trainer.glue.data import GlueTask

SPLIT_FILES = {"train": "train.jsonl", "dev": "val.jsonl", "test": "test.jsonl"}
HUB_SPLITS = {"train": "train", "dev": "validation", "test": "test"}
_BINARY = ("False", "True")


def _task(name: str, folder: str, labels: tuple[str, ...], hub: str | None = None) -> GlueTask:
    return GlueTask(name, folder, "", None, "label", labels, (hub or name, None), benchmark="superglue")


SUPERGLUE_TASKS: dict[str, GlueTask] = {
    "boolq": _task("boolq", "BoolQ", _BINARY),
    "cb": _task("cb", "CB", ("entailment", "contradiction", "neutral")),
    "copa": _task("copa", "COPA", ("choice1", "choice2")),
    # SuperGLUE RTE shares GLUE RTE's name (metrics, preset) but not its registry key or files.
    "superglue_rte": _task("rte", "RTE", ("entailment", "not_entailment")),
    "wic": _task("wic", "WiC", _BINARY),
    "wsc": _task("wsc", "WSC", _BINARY, hub="wsc.fixed"),
    "multirc": _task("multirc", "MultiRC", _BINARY),
}
UNSUPPORTED = {
    "record": "ReCoRD (cloze-style span selection over entities, not a classification task)",
    "axb": "the AX-b diagnostic set (test-only, no training data)",
    "axg": "the AX-g diagnostic set (test-only, no training data)",
}


def registry_key(name: str) -> str:
    """The task-registry key of SuperGLUE task ``name`` (``rte`` -> ``superglue_rte``)."""
    key = name.lower().replace("-", "")
    if key in UNSUPPORTED:
        raise ValueError(f"SuperGLUE task {name!r} is not supported: {UNSUPPORTED[key]}")
    key = "superglue_rte" if key == "rte" else key
    if key not in SUPERGLUE_TASKS:
        names = sorted(t.name for t in SUPERGLUE_TASKS.values())
        raise ValueError(f"unknown SuperGLUE task {name!r}; expected one of {names}")
    return key


def _label(task: GlueTask, raw: Any, where: str) -> int:
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, int) and 0 <= raw < task.num_labels:
        return raw
    if isinstance(raw, str) and raw in task.labels:
        return task.labels.index(raw)
    raise ValueError(f"{where}: label {raw!r} is not one of {list(task.labels)} for task {task.name}")


def _flat_rows(task: GlueTask, record: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """One jsonl record in the hub's flat row layout (several rows for a MultiRC passage)."""
    if task.name == "multirc":
        passage = record["passage"]
        return [
            {
                "paragraph": passage["text"],
                "question": q["question"],
                "answer": a["text"],
                "idx": {"paragraph": record["idx"], "question": q["idx"], "answer": a["idx"]},
                "label": _label(task, a["label"], where),
            }
            for q in passage["questions"]
            for a in q["answers"]
        ]
    row = dict(record)
    if task.name == "wsc":
        row.update(row.pop("target"))
    row["label"] = _label(task, row["label"], where)
    return [row]


def _mark_spans(row: dict[str, Any]) -> str:
    words = row["text"].split()
    spans = [(row["span1_index"], row["span1_text"], "*"), (row["span2_index"], row["span2_text"], "#")]
    for start, text, mark in sorted(spans, reverse=True):
        end = start + len(text.split())
        if not 0 <= start < end <= len(words):
            raise ValueError(f"WSC span {text!r} at word {start} is outside the sentence {row['text']!r}")
        words[start:end] = [mark, *words[start:end], mark]
    return " ".join(words)


def format_row(task: GlueTask, row: dict[str, Any]) -> tuple[str, str]:
    """``(text_a, text_b)`` of one flat row (see the module docstring for each task's format)."""
    name = task.name
    if name == "boolq":
        return row["question"], row["passage"]
    if name in ("cb", "rte"):
        return row["premise"], row["hypothesis"]
    if name == "copa":
        return f"{row['premise']} What was the {row['question']}?", f"{row['choice1']} or {row['choice2']}"
    if name == "wic":
        return f"{row['word']} : {row['sentence1']}", row["sentence2"]
    if name == "wsc":
        return _mark_spans(row), ""
    return row["paragraph"], f"{row['question']} {row['answer']}"


def to_dataset(task: GlueTask, rows: list[dict[str, Any]]) -> Dataset:
    """``text_a``, ``text_b``, ``label`` (and MultiRC's ``group``) columns of flat rows."""
    data: dict[str, list] = {"text_a": [], "text_b": [], "label": []}
    for row in rows:
        a, b = format_row(task, row)
        data["text_a"].append(a)
        data["text_b"].append(b)
        data["label"].append(int(row["label"]))
    if task.name == "multirc":
        data["group"] = [f"{r['idx']['paragraph']}-{r['idx']['question']}" for r in rows]
    return Dataset.from_dict(data)


def read_jsonl(task: GlueTask, path: str) -> Dataset:
    """One SuperGLUE jsonl file in ``task``'s original layout."""
    if not os.path.isfile(path):
        raise ValueError(f"SuperGLUE file not found: {path}")
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                rows += _flat_rows(task, json.loads(line), where)
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{where}: not a SuperGLUE {task.name} record ({err!r})") from err
    return to_dataset(task, rows)


def _from_hub(task: GlueTask, split: str) -> Dataset:
    import datasets

    try:
        ds = datasets.load_dataset("super_glue", task.hub_columns[0], split=HUB_SPLITS[split])
    except Exception as err:  # network, hub or cache errors all mean "not reachable"
        raise ValueError(
            f"cannot load SuperGLUE {task.name} from the HuggingFace hub ({type(err).__name__}: {err}); "
            "pass --data-dir with the SuperGLUE jsonl files"
        ) from err
    return to_dataset(task, list(ds))


def load_split(task: GlueTask, split: str, data_dir: str | None) -> Dataset:
    """``split`` (train, dev) from ``data_dir`` (the task's folder or the SuperGLUE root) or the hub."""
    if split not in SPLIT_FILES:
        raise ValueError(f"SuperGLUE {task.name} has no split {split!r}; expected one of {list(SPLIT_FILES)}")
    if data_dir is None:
        return _from_hub(task, split)
    nested = os.path.join(data_dir, task.folder)
    folder = nested if os.path.isdir(nested) else data_dir
    return read_jsonl(task, os.path.join(folder, SPLIT_FILES[split]))
