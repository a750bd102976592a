"""SuperGLUE: the shipped jsonl fixtures of all seven tasks, the hub row layout, input formats, the
unsupported tasks, and the metrics against sklearn on fixed predictions."""

import json
import os

import datasets
import numpy as np
import pytest

from fastkd.trainer.glue import data as D
from fastkd.trainer.glue.metrics import MAIN_METRIC, glue_metrics
from fastkd.trainer.models import DATA_DIR
from fastkd.trainer.superglue import data as S
from fastkd.trainer.superglue import metrics as M

sklearn_metrics = pytest.importorskip("sklearn.metrics")
SUPERGLUE_DIR = os.path.join(DATA_DIR, "demo", "superglue")
NUM_LABELS = {"boolq": 2, "cb": 3, "copa": 2, "superglue_rte": 2, "wic": 2, "wsc": 2, "multirc": 2}


def _records(task: str, split: str = "train.jsonl") -> list[dict]:
    path = os.path.join(SUPERGLUE_DIR, S.SUPERGLUE_TASKS[task].folder, split)
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("key", sorted(S.SUPERGLUE_TASKS))
def test_fixture_loads_in_the_registry(key: str) -> None:
    task = D.get_task(key)
    assert task.benchmark == "superglue" and task.num_labels == NUM_LABELS[key]
    train, evals = D.load_glue(task, SUPERGLUE_DIR)
    records = _records(key)
    expected = (
        sum(len(q["answers"]) for r in records for q in r["passage"]["questions"])
        if key == "multirc"
        else len(records)
    )
    assert len(train) == expected and len(evals["dev"]) > 0
    assert set(train["label"]) <= set(range(task.num_labels)) and len(set(train["label"])) > 1
    assert all(train["text_a"])
    assert task.name in MAIN_METRIC


def test_input_formats_follow_the_documented_layout() -> None:
    copa = D.load_split(D.get_task("copa"), "train", SUPERGLUE_DIR)[0]
    raw = _records("copa")[0]
    assert copa["text_a"] == f"{raw['premise']} What was the {raw['question']}?"
    assert copa["text_b"] == f"{raw['choice1']} or {raw['choice2']}" and copa["label"] == raw["label"]
    wic, raw = D.load_split(D.get_task("wic"), "train", SUPERGLUE_DIR)[0], _records("wic")[0]
    assert wic["text_a"] == f"{raw['word']} : {raw['sentence1']}" and wic["text_b"] == raw["sentence2"]
    assert wic["label"] == int(raw["label"])
    wsc, raw = D.load_split(D.get_task("wsc"), "train", SUPERGLUE_DIR)[0], _records("wsc")[0]
    span1, span2 = raw["target"]["span1_text"], raw["target"]["span2_text"]
    assert f"* {span1} *" in wsc["text_a"] and f"# {span2} #" in wsc["text_a"] and wsc["text_b"] == ""
    cb, raw = D.load_split(D.get_task("cb"), "train", SUPERGLUE_DIR)[0], _records("cb")[0]
    assert cb["label"] == ["entailment", "contradiction", "neutral"].index(raw["label"])


def test_multirc_is_one_binary_example_per_answer_grouped_by_question() -> None:
    ds = S.read_jsonl(D.get_task("multirc"), os.path.join(SUPERGLUE_DIR, "MultiRC", "val.jsonl"))
    raw = _records("multirc", "val.jsonl")
    first_q = raw[0]["passage"]["questions"][0]
    n_answers = len(first_q["answers"])
    assert ds["group"][:n_answers] == [f"{raw[0]['idx']}-{first_q['idx']}"] * n_answers
    assert ds["text_b"][0] == f"{first_q['question']} {first_q['answers'][0]['text']}"
    assert len(set(ds["group"])) == sum(len(r["passage"]["questions"]) for r in raw)


def test_hub_rows_give_the_same_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [dict(r, label=int(r["label"])) for r in _records("wsc")]
    for row in rows:
        row.update(row.pop("target"))
    asked = []

    def fake_load(path: str, name: str, split: str) -> datasets.Dataset:
        asked.append((path, name, split))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    task = D.get_task("wsc")
    hub = D.load_split(task, "dev", None)
    assert asked == [("super_glue", "wsc.fixed", "validation")]
    local = D.load_split(task, "train", SUPERGLUE_DIR)
    assert hub.to_dict() == local.to_dict()


def test_unsupported_and_unknown_tasks() -> None:
    for name in ("record", "axb", "AX-g"):
        with pytest.raises(ValueError, match="not supported"):
            D.get_task(name)
    with pytest.raises(ValueError, match="unknown GLUE task 'boolqq'"):
        D.get_task("boolqq")
    assert D.get_task("rte").benchmark == "glue" and D.get_task("superglue_rte").benchmark == "superglue"
    assert S.registry_key("rte") == "superglue_rte"


def test_bad_jsonl_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "train.jsonl"
    bad.write_text(json.dumps({"premise": "a", "hypothesis": "b", "label": "maybe", "idx": 0}) + "\n")
    with pytest.raises(ValueError, match=r"train.jsonl:1: label 'maybe' is not one of"):
        S.read_jsonl(D.get_task("cb"), str(bad))
    with pytest.raises(ValueError, match="SuperGLUE file not found"):
        D.load_split(D.get_task("cb"), "train", str(tmp_path / "nowhere"))


RNG = np.random.default_rng(3)


def test_cb_macro_f1_matches_sklearn() -> None:
    gold = RNG.integers(0, 3, 150)
    pred = np.where(RNG.random(150) < 0.6, gold, RNG.integers(0, 3, 150))
    assert M.macro_f1(pred, gold) == pytest.approx(sklearn_metrics.f1_score(gold, pred, average="macro"))
    never_two = np.where(pred == 2, 0, pred)  # a class present in gold only
    assert M.macro_f1(never_two, gold) == pytest.approx(
        sklearn_metrics.f1_score(gold, never_two, average="macro", zero_division=0)
    )
    logits = np.eye(3)[pred]
    out = glue_metrics("cb", logits, gold)
    assert out["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(gold, pred))
    assert out["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(gold, pred, average="macro"))


def test_multirc_f1a_and_exact_match() -> None:
    groups = np.repeat(np.arange(40), 3)
    gold = RNG.integers(0, 2, 120)
    pred = np.where(RNG.random(120) < 0.8, gold, 1 - gold)
    out = glue_metrics("multirc", np.eye(2)[pred], gold, groups)
    assert out["f1a"] == pytest.approx(sklearn_metrics.f1_score(gold, pred))
    by_hand = np.mean([np.all(pred[groups == g] == gold[groups == g]) for g in range(40)])
    assert out["em"] == pytest.approx(by_hand) and 0 < by_hand < 1
    assert "em" not in glue_metrics("multirc", np.eye(2)[pred], gold)
    with pytest.raises(ValueError, match="question ids"):
        M.superglue_metrics("multirc", pred, gold, groups[:-1])
