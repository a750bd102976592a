"""The base of the loss modules: keyword options fixed at construction and shown by ``repr``."""

from __future__ import annotations

from typing import Any

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
