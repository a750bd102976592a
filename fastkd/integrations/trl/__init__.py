"""fastkd as the loss engine of TRL (``pip install 'fastkd[trl]'``; tested with trl >= 1.16, < 1.17).

- :func:`generalized_jsd_loss`: TRL's ``GKDTrainer.generalized_jsd_loss`` (same signature, reductions
  and β endpoints) on fastkd's fused kernels; needs no TRL install.
- :class:`GKDTrainer` / :class:`GKDConfig` and :class:`DistillationTrainer` /
  :class:`DistillationConfig`: subclasses of TRL's own classes that replace only the loss, with the
  config fields ``fastkd_divergence``, ``fastkd_teacher_topk``, ``fastkd_hard_label_weight`` and
  ``fastkd_backend``.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from fastkd.integrations.trl.jsd import generalized_jsd_loss

_NEEDS_TRL = {
    "GKDTrainer": "fastkd.integrations.trl.gkd",
    "GKDConfig": "fastkd.integrations.trl.config",
    "DistillationTrainer": "fastkd.integrations.trl.distillation",
    "DistillationConfig": "fastkd.integrations.trl.config",
}

__all__ = ["DistillationConfig", "DistillationTrainer", "GKDConfig", "GKDTrainer", "generalized_jsd_loss"]


def __getattr__(name: str) -> Any:
    if name not in _NEEDS_TRL:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if importlib.util.find_spec("trl") is None:
        raise ImportError(
            f"fastkd.integrations.trl.{name} needs TRL: pip install 'fastkd[trl]' (trl>=1.16,<1.17)"
        )
    return getattr(importlib.import_module(_NEEDS_TRL[name]), name)
