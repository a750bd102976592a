"""HuggingFace Transformers integration: ``DistillationTrainer``, ``DistillationArguments``, the loss
registry and the ``fastkd`` command line (``fastkd glue ...``, ``fastkd lm ...``, ``fastkd info``).

Needs the ``trainer`` extra (``pip install 'fastkd[trainer]'``); ``import fastkd`` does not import it.
The names below are imported on first use, so the command line parses without importing transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DistillationArguments": "fastkd.trainer.args",
    "DistillationTrainer": "fastkd.trainer.trainer",
    "available_losses": "fastkd.trainer.losses",
    "build_loss": "fastkd.trainer.losses",
    "load_teacher": "fastkd.trainer.trainer",
    "register_loss": "fastkd.trainer.losses",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'fastkd.trainer' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
