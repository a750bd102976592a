"""SuperGLUE metrics beyond accuracy (Wang et al., arXiv 1905.00537): CB's macro-F1 and MultiRC's F1
over all answers (F1a) and exact match per question (EM), in numpy."""

from __future__ import annotations

import numpy as np

from fastkd.trainer.glue.metrics import f1


def macro_f1(pred: np.ndarray, gold: np.ndarray) -> float:
    """Unweighted mean over the classes present in ``gold`` or ``pred`` of 2·TP_c / (2·TP_c + FP_c + FN_c)
    (sklearn's ``f1_score(average="macro")``)."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    scores = []
    for c in np.union1d(pred, gold):
        tp = float(np.sum((pred == c) & (gold == c)))
        wrong = float(np.sum((pred == c) != (gold == c)))
        scores.append(2 * tp / (2 * tp + wrong))
    return float(np.mean(scores)) if scores else 0.0


def exact_match(pred: np.ndarray, gold: np.ndarray, groups: np.ndarray) -> float:
    """Fraction of groups (MultiRC questions) whose every answer is predicted right."""
    right = np.asarray(pred) == np.asarray(gold)
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    wrong_per_group = np.bincount(inverse, weights=~right)
    return float(np.mean(wrong_per_group == 0))


def superglue_metrics(
    task: str, pred: np.ndarray, gold: np.ndarray, groups: np.ndarray | None = None
) -> dict[str, float]:
    """The metrics of ``task`` beyond accuracy from class predictions ``pred`` (MultiRC EM needs
    ``groups``, one question id per answer; without it only F1a is given)."""
    if task == "cb":
        return {"macro_f1": macro_f1(pred, gold)}
    if task == "multirc":
        out = {"f1a": f1(pred, gold)}
        if groups is not None:
            if len(groups) != len(pred):
                raise ValueError(f"MultiRC: {len(groups)} question ids for {len(pred)} answers")
            out["em"] = exact_match(pred, gold, groups)
        return out
    return {}
