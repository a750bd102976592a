"""GLUE metrics with their standard definitions (Wang et al., arXiv 1804.07461), in numpy.

accuracy; F1 of the positive class (MRPC, QQP); Matthews correlation (CoLA); Pearson and Spearman
correlation (STS-B). The main metric used for best-checkpoint selection is listed in ``MAIN_METRIC``.
"""

from __future__ import annotations

import numpy as np

MAIN_METRIC = {
    "cola": "matthews",
    "sst2": "accuracy",
    "mrpc": "f1",
    "stsb": "pearson",
    "qqp": "f1",
    "mnli": "accuracy",
    "qnli": "accuracy",
    "rte": "accuracy",
    "wnli": "accuracy",
    # SuperGLUE (rte as above)
    "boolq": "accuracy",
    "cb": "macro_f1",
    "copa": "accuracy",
    "wic": "accuracy",
    "wsc": "accuracy",
    "multirc": "f1a",
}
_SUPERGLUE = ("boolq", "cb", "copa", "wic", "wsc", "multirc")


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(gold)))


def f1(pred: np.ndarray, gold: np.ndarray) -> float:
    """F1 of class 1: 2·TP / (2·TP + FP + FN) (0 when there is no positive at all)."""
    pred, gold = np.asarray(pred) == 1, np.asarray(gold) == 1
    tp = float(np.sum(pred & gold))
    denom = 2 * tp + float(np.sum(pred & ~gold)) + float(np.sum(~pred & gold))
    return 2 * tp / denom if denom else 0.0


def matthews(pred: np.ndarray, gold: np.ndarray) -> float:
    """Matthews correlation (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)); 0 when undefined."""
    pred, gold = np.asarray(pred) == 1, np.asarray(gold) == 1
    tp, tn = float(np.sum(pred & gold)), float(np.sum(~pred & ~gold))
    fp, fn = float(np.sum(pred & ~gold)), float(np.sum(~pred & gold))
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denom) if denom else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / denom) if denom else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(_ranks(x), _ranks(y))


def glue_metrics(
    task: str, predictions: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None
) -> dict[str, float]:
    """All metrics of ``task`` from raw logits ``predictions`` [N, C] (or [N, 1] for STS-B); the
    SuperGLUE tasks add theirs (``fastkd.trainer.superglue.metrics``; ``groups``: MultiRC question ids)."""
    predictions = np.asarray(predictions)
    if task == "stsb":
        scores = predictions.reshape(-1)
        return {"pearson": pearson(scores, labels), "spearman": spearman(scores, labels)}
    pred = predictions.argmax(-1)
    out = {"accuracy": accuracy(pred, labels)}
    if task in ("mrpc", "qqp"):
        out["f1"] = f1(pred, labels)
    if task == "cola":
        out["matthews"] = matthews(pred, labels)
    if task in _SUPERGLUE:
        from fastkd.trainer.superglue.metrics import superglue_metrics

        out.update(superglue_metrics(task, pred, labels, groups))
    return out
