"""The base of the loss modules: keyword options fixed at construction and shown by ``repr``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fastkd.backends import check_backend_name

CALL_OPTIONS = ("labels", "mask", "num_items_in_batch")


def keyword_options(function: Callable[..., object]) -> tuple[str, ...]:
    """The options ``function`` takes by keyword with a default (its tensors have none)."""
    parameters = inspect.signature(function).parameters.values()
    return tuple(p.name for p in parameters if p.default is not inspect.Parameter.empty)


class FixedOptionsLoss(nn.Module):
    """Stores the keyword ``options`` that every call passes on to the wrapped ``function``, checked at
    construction: a per-call argument (``per_call``) or a name ``function`` does not take is a TypeError
    naming it and the valid options; an unknown ``backend`` is a ValueError.

    Subclasses check the values of their other options in ``__init__``; ``extra_repr`` shows the
    attributes named in ``shown`` and then the options. ``extra_options`` names the options that
    ``function`` takes through ``**kwargs``.
    """

    function: Callable[..., torch.Tensor]
    shown: tuple[str, ...] = ()
    extra_options: tuple[str, ...] = ()

    def __init__(self, options: dict[str, Any], per_call: tuple[str, ...] = CALL_OPTIONS) -> None:
        super().__init__()
        taken = [name for name in per_call if name in options]
        if taken:
            raise TypeError(f"{taken} are per-call arguments of the loss, not construction options")
        excluded = {*CALL_OPTIONS, *per_call, *self.shown}
        valid = [n for n in (*keyword_options(self.function), *self.extra_options) if n not in excluded]
        unknown = [name for name in options if name not in valid]
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown option(s) {unknown}; valid options are {sorted(valid)}"
            )
        if "backend" in options:
            check_backend_name(options["backend"])
        self.options = options

    def extra_repr(self) -> str:
        fields = {**{name: getattr(self, name) for name in self.shown}, **self.options}
        return ", ".join(f"{k}={v!r}" for k, v in fields.items())


class LogitsPairLoss(FixedOptionsLoss):
    """``criterion(student_logits, teacher_logits, labels=None, mask=None, num_items_in_batch=None)``:
    the subclass's ``function`` with the ``shown`` attributes and the options as keyword arguments."""

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
