"""The base of the loss modules: keyword options fixed at construction and shown by ``repr``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

CALL_OPTIONS = ("labels", "mask", "num_items_in_batch")


class FixedOptionsLoss(nn.Module):
    """Stores the keyword ``options`` that every call passes on, after rejecting those of ``per_call``
    (arguments of each call, not of the construction) with a TypeError naming them.

    Subclasses check their options in ``__init__``; ``extra_repr`` shows the attributes named in
    ``shown`` and then the options.
    """

    shown: tuple[str, ...] = ()

    def __init__(self, options: dict[str, Any], per_call: tuple[str, ...] = CALL_OPTIONS) -> None:
        super().__init__()
        taken = [name for name in per_call if name in options]
        if taken:
            raise TypeError(f"{taken} are per-call arguments of the loss, not construction options")
        self.options = options

    def extra_repr(self) -> str:
        fields = {**{name: getattr(self, name) for name in self.shown}, **self.options}
        return ", ".join(f"{k}={v!r}" for k, v in fields.items())


class LogitsPairLoss(FixedOptionsLoss):
    """``criterion(student_logits, teacher_logits, labels=None, mask=None, num_items_in_batch=None)``:
    the subclass's ``function`` with the ``shown`` attributes and the options as keyword arguments."""

    function: Callable[..., torch.Tensor]

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        labels: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.function(
            student_logits,
            teacher_logits,
            labels=labels,
            mask=mask,
            num_items_in_batch=num_items_in_batch,
            **{name: getattr(self, name) for name in self.shown},
            **self.options,
        )
