"""The public loss functions (also reachable as ``fastkd.losses.<name>``)."""

from fastkd.functional.divergence import (
    akl,
    forward_kl,
    jsd,
    kd_loss,
    reverse_kl,
    skew_kl,
    skew_reverse_kl,
    soft_cross_entropy,
    tvd,
)
from fastkd.functional.fused_linear import fused_linear_kd
from fastkd.functional.ranking import ranking_loss, rlkd
from fastkd.functional.sparse import sparse_kl, teacher_topk
from fastkd.functional.taid import taid

__all__ = [
    "akl",
    "forward_kl",
    "fused_linear_kd",
    "jsd",
    "kd_loss",
    "ranking_loss",
    "reverse_kl",
    "rlkd",
    "skew_kl",
    "skew_reverse_kl",
    "soft_cross_entropy",
    "sparse_kl",
    "taid",
    "teacher_topk",
    "tvd",
]
from fastkd.functional.sinkhorn import sinkd_objective, sinkhorn_loss

__all__ += ["sinkd_objective", "sinkhorn_loss"]
