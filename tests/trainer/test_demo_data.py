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

DATA = os.path.join(os.path.dirname(fastkd.__file__), "trainer", "data")
DEMO = os.path.join(DATA, "demo", "SST-2")
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


def near_duplicates(first: list[str], second: list[str]) -> list[tuple[str, str]]:
    """The pairs (a in ``first``, b in ``second``) that share most of their words or characters."""
    words = {b: set(b.split()) for b in second}
    matcher = difflib.SequenceMatcher()
    close = []
    for a in first:
        wa = set(a.split())
        matcher.set_seq2(a)  # the matcher caches its analysis of the second sequence
        for b in second:
            if len(wa & words[b]) / len(wa | words[b]) >= MAX_WORD_JACCARD:
                close.append((a, b))
                continue
            matcher.set_seq1(b)
            # quick_ratio() bounds ratio() from above and is far cheaper
            if matcher.quick_ratio() >= MAX_CHAR_RATIO and matcher.ratio() >= MAX_CHAR_RATIO:
                close.append((a, b))
    return close


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
    close = near_duplicates(dev, train)
    assert not close, f"{len(close)} dev/train near-duplicates, e.g. {close[:3]}"


def test_tiny_vocabulary_keeps_every_train_word_whole() -> None:
    # The tiny BERT of `fastkd glue demo --tiny` learns word embeddings only for words in its vocabulary;
    # a word outside it is split into letters. Dev-only words may stay outside (unseen in training).
    with open(os.path.join(DATA, "tiny_vocab.txt"), encoding="utf-8") as f:
        vocabulary = set(f.read().splitlines())
    train_words = {w for s, _ in _rows("train") for w in re.findall(r"[a-z0-9]+", s.lower())}
    missing = sorted(train_words - vocabulary)
    assert not missing, f"{len(missing)} train words not in tiny_vocab.txt, e.g. {missing[:5]}"


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ("the film was quite charming", "the film was really charming", True),
        ("the soundtrack was honestly not lovely", "the soundtrack was not lovely", True),
        ("the soup arrived lukewarm", "the tent went up in minutes, even in the wind", False),
    ],
)
def test_near_duplicate_detects_templated_pairs(a: str, b: str, expected: bool) -> None:
    assert bool(near_duplicates([_normal(a)], [_normal(b)])) is expected
