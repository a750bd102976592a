"""GLUE metrics against sklearn / scipy on fixed predictions."""

import numpy as np
import pytest

sklearn_metrics = pytest.importorskip("sklearn.metrics")
stats = pytest.importorskip("scipy.stats")

from fastkd.trainer.glue import metrics as M  # noqa: E402

RNG = np.random.default_rng(7)
GOLD = RNG.integers(0, 2, 200)
PRED = np.where(RNG.random(200) < 0.7, GOLD, 1 - GOLD)


def test_classification_metrics_match_sklearn() -> None:
    assert M.accuracy(PRED, GOLD) == pytest.approx(sklearn_metrics.accuracy_score(GOLD, PRED))
    assert M.f1(PRED, GOLD) == pytest.approx(sklearn_metrics.f1_score(GOLD, PRED))
    assert M.matthews(PRED, GOLD) == pytest.approx(sklearn_metrics.matthews_corrcoef(GOLD, PRED))


def test_degenerate_cases() -> None:
    zeros = np.zeros(10, dtype=int)
    assert M.f1(zeros, zeros) == 0.0 == sklearn_metrics.f1_score(zeros, zeros, zero_division=0)
    assert M.matthews(zeros, GOLD[:10]) == sklearn_metrics.matthews_corrcoef(GOLD[:10], zeros) == 0.0


def test_correlations_match_scipy_with_ties() -> None:
    x = np.round(RNG.normal(size=300), 1)  # rounding makes ties
    y = x + RNG.normal(scale=0.8, size=300)
    assert M.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert M.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


@pytest.mark.parametrize(
    ("task", "keys"),
    [
        ("cola", {"accuracy", "matthews"}),
        ("mrpc", {"accuracy", "f1"}),
        ("qqp", {"accuracy", "f1"}),
        ("mnli", {"accuracy"}),
        ("stsb", {"pearson", "spearman"}),
    ],
)
def test_glue_metrics_per_task(task: str, keys: set) -> None:
    logits = RNG.normal(size=(50, 1 if task == "stsb" else 3 if task == "mnli" else 2))
    gold = RNG.normal(size=50) if task == "stsb" else RNG.integers(0, logits.shape[1], 50)
    out = M.glue_metrics(task, logits, gold)
    assert set(out) == keys
    assert out[M.MAIN_METRIC[task]] == out[M.MAIN_METRIC[task]]  # present and not NaN
    if task != "stsb":
        assert out["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(gold, logits.argmax(-1)))
