"""The demo sample that ``fastkd glue demo`` trains on: SST-2 layout, balanced, dev and train disjoint.

A dev sentence that also appears in train (or differs from one by a word or two) measures memory, not
generalisation, and makes the teacher / no-KD / KD comparison of the demo meaningless.
"""

from __future__ import annotations

import difflib
import os
import re

import pytest

import fastkd

DEMO = os.path.join(os.path.dirname(fastkd.__file__), "trainer", "data", "demo", "SST-2")
MAX_WORD_JACCARD = 0.6  # share of distinct words two sentences may have in common
MAX_CHAR_RATIO = 0.8  # difflib similarity of the two strings


def _rows(split: str) -> list[tuple[str, int]]:
    with open(os.path.join(DEMO, f"{split}.tsv"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0] == "sentence\tlabel", f"{split}.tsv header is {lines[0]!r}"
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(r) == 2 and r[1] in ("0", "1") for r in rows), f"{split}.tsv: malformed row"
    return [(sentence, int(label)) for sentence, label in rows]


def _normal(sentence: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", sentence.lower()))


def near_duplicate(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` share most of their words or most of their characters."""
    wa, wb = set(a.split()), set(b.split())
    if len(wa & wb) / len(wa | wb) >= MAX_WORD_JACCARD:
        return True
    matcher = difflib.SequenceMatcher(None, a, b)
    return matcher.quick_ratio() >= MAX_CHAR_RATIO and matcher.ratio() >= MAX_CHAR_RATIO


@pytest.mark.parametrize("split, minimum", [("train", 300), ("dev", 100)])
def test_split_is_large_balanced_and_without_repeats(split: str, minimum: int) -> None:
    rows = _rows(split)
    sentences = [_normal(s) for s, _ in rows]
    assert len(rows) >= minimum
    assert len(set(sentences)) == len(sentences), f"{split}.tsv repeats a sentence"
    positives = sum(label for _, label in rows)
    assert 0.45 <= positives / len(rows) <= 0.55, f"{split}.tsv: {positives} of {len(rows)} positive"


def test_dev_and_train_are_disjoint_without_near_duplicates() -> None:
    train = [_normal(s) for s, _ in _rows("train")]
    dev = [_normal(s) for s, _ in _rows("dev")]
    shared = sorted(set(train) & set(dev))
    assert not shared, f"{len(shared)} dev sentences also in train, e.g. {shared[:3]}"
    close = [(d, t) for d in dev for t in train if near_duplicate(d, t)]
    assert not close, f"{len(close)} dev/train near-duplicates, e.g. {close[:3]}"


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ("the film was quite charming", "the film was really charming", True),
        ("the soundtrack was honestly not lovely", "the soundtrack was not lovely", True),
        ("the soup arrived lukewarm", "the tent went up in minutes, even in the wind", False),
    ],
)
def test_near_duplicate_detects_templated_pairs(a: str, b: str, expected: bool) -> None:
    assert near_duplicate(_normal(a), _normal(b)) is expected
