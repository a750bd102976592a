"""TRL's configs with fastkd's fields (:class:`~fastkd.integrations.trl.loss.FastKDFields`), checked
when the config is built."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DistillationConfig as TRLDistillationConfig
from trl.experimental.gkd import GKDConfig as TRLGKDConfig

from fastkd.integrations.trl.loss import FastKDFields, loss_spec


@dataclass
class GKDConfig(TRLGKDConfig, FastKDFields):
    """``trl.experimental.gkd.GKDConfig`` plus the ``fastkd_*`` fields. The loss runs at T = 1 as in
    TRL's GKD (its ``temperature`` is the sampling temperature). ``fastkd_fused_linear=True`` feeds
    both backbones' hidden states and lm_heads to ``fused_linear_kd``: no logits are formed."""

    fastkd_fused_linear: bool = field(
        default=False, metadata={"help": "Loss from hidden states and lm_heads (fused_linear_kd), no logits."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        loss_spec(self, temperature=1.0)


@dataclass
class DistillationConfig(TRLDistillationConfig, FastKDFields):
    """``trl.DistillationConfig`` plus the ``fastkd_*`` fields; the loss runs at its ``temperature``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        loss_spec(self, temperature=self.temperature)
