"""Drop-in loss namespace: ``import fastkd.losses as L`` gives every function and module."""

from fastkd.functional import (
    akl,
    forward_kl,
    jsd,
    kd_loss,
    reverse_kl,
    skew_kl,
    skew_reverse_kl,
    soft_cross_entropy,
    taid,
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
from fastkd.losses.taid_loss import TAIDLoss, TAIDSchedule

__all__ = [
    "AKLLoss",
    "ForwardKLLoss",
    "JSDLoss",
    "KDLoss",
    "ReverseKLLoss",
    "SkewKLLoss",
    "SkewReverseKLLoss",
    "SoftCrossEntropyLoss",
    "TAIDLoss",
    "TAIDSchedule",
    "TVDLoss",
    "akl",
    "forward_kl",
    "jsd",
    "kd_loss",
    "reverse_kl",
    "skew_kl",
    "skew_reverse_kl",
    "soft_cross_entropy",
    "taid",
    "tvd",
]
