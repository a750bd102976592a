"""nn.Module wrappers of RLKD (arXiv 2409.12545): options fixed at construction, checked there."""

from __future__ import annotations

from typing import Any

from fastkd.boundary.options import DivergenceOptions
from fastkd.functional.divergence import divergence_options
from fastkd.functional.ranking import ranking_loss, rlkd
from fastkd.losses._base import LogitsPairLoss


def _check_k(k: object) -> None:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be a Python int, got {type(k).__name__} ({k!r})")
    if k < 1:
        raise ValueError(f"k must be >= 1, got k={k}")


class RankingLoss(LogitsPairLoss):
    """``criterion(student_logits, teacher_logits, labels=None, mask=None, num_items_in_batch=None)``:
    :func:`fastkd.losses.ranking_loss` with ``k`` (default 5), ``reduction``, ``ignore_index``,
    ``backend`` fixed at construction."""

    function = staticmethod(ranking_loss)
    shown = ("k",)

    def __init__(self, k: int = 5, **options: Any) -> None:
        super().__init__(options)
        _check_k(k)
        DivergenceOptions(
            **{name: options[name] for name in ("reduction", "ignore_index") if name in options}
        )
        self.k = k


class RLKDLoss(LogitsPairLoss):
    """``criterion(student_logits, teacher_logits, labels=None, mask=None, num_items_in_batch=None)``:
    :func:`fastkd.losses.rlkd` = ranking + divergence / 2, with ``k``, ``divergence`` and the options of
    :func:`fastkd.losses.kd_loss` (temperature, reduction, family parameter, ...) fixed at construction."""

    function = staticmethod(rlkd)
    shown = ("k", "divergence")

    def __init__(self, k: int = 5, divergence: str = "forward_kl", **options: Any) -> None:
        super().__init__(options)
        _check_k(k)
        divergence_options(divergence, **options)
        self.k = k
        self.divergence = divergence
