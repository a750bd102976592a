"""Drop-in loss namespace: ``import fastkd.losses as L`` gives every function and module."""

from fastkd.functional import (
    akl,
    forward_kl,
    fused_linear_kd,
    jsd,
    kd_loss,
    ranking_loss,
    reverse_kl,
    rlkd,
    skew_kl,
    skew_reverse_kl,
    soft_cross_entropy,
    sparse_kl,
    taid,
    teacher_topk,
    tvd,
)
from fastkd.losses.divergence import (
    AKLLoss,
    ForwardKLLoss,
    JSDLoss,
    KDLoss,
    ReverseKLLoss,
    SkewKLLoss,
    SkewReverseKLLoss,
    SoftCrossEntropyLoss,
    TVDLoss,
)
from fastkd.losses.fused_linear import FusedLinearKDLoss
from fastkd.losses.ranking import RankingLoss, RLKDLoss
from fastkd.losses.sparse import SparseKLLoss
from fastkd.losses.taid_loss import TAIDLoss, TAIDSchedule

__all__ = [
    "AKLLoss",
    "ForwardKLLoss",
    "FusedLinearKDLoss",
    "JSDLoss",
    "KDLoss",
    "RLKDLoss",
    "RankingLoss",
    "ReverseKLLoss",
    "SkewKLLoss",
    "SkewReverseKLLoss",
    "SoftCrossEntropyLoss",
    "SparseKLLoss",
    "TAIDLoss",
    "TAIDSchedule",
    "TVDLoss",
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
from fastkd.functional import sinkd_objective, sinkhorn_loss
from fastkd.losses.sinkhorn import SinKDObjectiveLoss, SinkhornLoss

__all__ += ["SinKDObjectiveLoss", "SinkhornLoss", "sinkd_objective", "sinkhorn_loss"]
