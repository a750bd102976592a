"""GLUE loaders: each task's TSV layout from the shipped fixtures, the hub path, and bad input."""

import os
import shutil

import pytest
from conftest import GLUE_DIR

from fastkd.trainer.glue import data as D

EXPECTED_LABELS = {
    "cola": 2,
    "sst2": 2,
    "mrpc": 2,
    "stsb": 1,
    "qqp": 2,
    "mnli": 3,
    "qnli": 2,
    "rte": 2,
    "wnli": 2,
}


def _raw_rows(path: str, header: bool) -> list[list[str]]:
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    return rows[1:] if header else rows


@pytest.mark.parametrize("name", sorted(D.TASKS))
def test_every_task_loads_from_its_tsv_layout(name: str) -> None:
    task = D.get_task(name)
    train, evals = D.load_glue(task, GLUE_DIR)
    assert set(evals) == set(task.eval_splits)
    raw = _raw_rows(os.path.join(GLUE_DIR, task.folder, "train.tsv"), task.header)
    assert len(train) == len(raw)
    first = raw[0]
    header = (
        None if not task.header else _raw_rows(os.path.join(GLUE_DIR, task.folder, "train.tsv"), False)[0]
    )
    col = (lambda c: c) if header is None else header.index
    assert train[0]["text_a"] == first[col(task.text_a)]
    assert train[0]["text_b"] == (first[col(task.text_b)] if task.text_b is not None else "")
    raw_label = first[col(task.label)]
    expected = float(raw_label) if task.is_regression else task.labels.index(raw_label)
    assert train[0]["label"] == expected
    assert task.num_labels == EXPECTED_LABELS[name]
    if not task.is_regression:
        assert set(train["label"]) <= set(range(task.num_labels))


def test_mnli_has_matched_and_mismatched_dev() -> None:
    train, evals = D.load_glue(D.get_task("mnli"), GLUE_DIR, max_train=5, max_eval=3)
    assert sorted(evals) == ["dev_matched", "dev_mismatched"]
    assert len(train) == 5 and all(len(ds) == 3 for ds in evals.values())


def test_task_folder_or_root_and_spellings() -> None:
    a = D.load_split(D.get_task("SST-2"), "dev", GLUE_DIR)
    b = D.load_split(D.get_task("sst2"), "dev", os.path.join(GLUE_DIR, "SST-2"))
    assert a["text_a"] == b["text_a"]


def test_hub_loader_maps_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def fake_load_dataset(path: str, name: str, split: str) -> datasets.Dataset:
        calls.append((path, name, split))
        return datasets.Dataset.from_dict(
            {"premise": ["p1", "p2"], "hypothesis": ["h1", "h2"], "label": [2, 0]}
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    train, evals = D.load_glue(D.get_task("mnli"), None)
    assert calls == [
        ("glue", "mnli", "train"),
        ("glue", "mnli", "validation_matched"),
        ("glue", "mnli", "validation_mismatched"),
    ]
    assert train["text_a"] == ["p1", "p2"] and train["text_b"] == ["h1", "h2"] and train["label"] == [2, 0]


def test_hub_unreachable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ValueError, match="--data-dir"):
        D.load_split(D.get_task("rte"), "train", None)


def test_bad_input(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown GLUE task 'squad'"):
        D.get_task("squad")
    with pytest.raises(ValueError, match="not found"):
        D.load_split(D.get_task("rte"), "train", str(tmp_path))
    (tmp_path / "train.tsv").write_text("index\tsentence1\tlabel\n0\ta\tentailment\n")
    with pytest.raises(ValueError, match="missing column 'sentence2'"):
        D.load_split(D.get_task("rte"), "train", str(tmp_path))
    (tmp_path / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(ValueError, match="label 'maybe'"):
        D.load_split(D.get_task("rte"), "train", str(tmp_path))
    (tmp_path / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")
    with pytest.raises(ValueError, match="empty"):
        D.load_split(D.get_task("rte"), "train", str(tmp_path))
    shutil.copy(os.path.join(GLUE_DIR, "SST-2", "train.tsv"), tmp_path / "dev.tsv")
    (tmp_path / "dev.tsv").write_text("a\tb\n")
    with pytest.raises(ValueError, match="task cola needs 4 columns"):
        D.load_split(D.get_task("cola"), "dev", str(tmp_path))


def test_presets_cover_every_task_and_override() -> None:
    from fastkd.trainer.glue.presets import PRESETS
    from fastkd.trainer.superglue.data import SUPERGLUE_TASKS

    assert set(PRESETS) == set(D.TASKS) | {t.name for t in SUPERGLUE_TASKS.values()}
    base = PRESETS["rte"]
    changed = base.override(learning_rate=1e-3, epochs=None)
    assert changed.learning_rate == 1e-3 and changed.epochs == base.epochs and base.learning_rate == 2e-5
    with pytest.raises(ValueError, match="unknown preset fields"):
        base.override(dropout=0.1)
