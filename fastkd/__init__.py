"""fastkd: fused, memory-efficient knowledge-distillation losses for vocabulary-scale models.

The public names are imported on first use (PEP 562), so ``python -m fastkd --help`` and the
``fastkd`` command parse their arguments without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["DIVERGENCES", "TAIDSchedule", "losses", "teacher_topk"]

_LAZY = {
    "losses": ("fastkd.losses", None),
    "DIVERGENCES": ("fastkd.boundary.options", "DIVERGENCES"),
    "teacher_topk": ("fastkd.functional.sparse", "teacher_topk"),
    "TAIDSchedule": ("fastkd.losses", "TAIDSchedule"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'fastkd' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = importlib.import_module(module)
    value = value if attribute is None else getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
