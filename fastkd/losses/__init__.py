"""Drop-in loss namespace: ``import fastkd.losses as L`` gives every function and module."""

from fastkd import functional as _functional
from fastkd.functional import *  # noqa: F403  (every public function, listed in functional.__all__)
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
    *_functional.__all__,
]
from fastkd.functional import sinkd_objective, sinkhorn_loss
from fastkd.losses.sinkhorn import SinKDObjectiveLoss, SinkhornLoss

__all__ += ["SinKDObjectiveLoss", "SinkhornLoss", "sinkd_objective", "sinkhorn_loss"]
