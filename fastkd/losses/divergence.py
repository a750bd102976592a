"""nn.Module wrappers of the divergence family: options fixed at construction, checked there."""

from __future__ import annotations

from typing import Any

from fastkd.functional.divergence import divergence_options, kd_loss
from fastkd.losses._base import LogitsPairLoss


class KDLoss(LogitsPairLoss):
    """``criterion(student_logits, teacher_logits, labels=None, mask=None, num_items_in_batch=None)``.

    ``divergence`` and the keyword options (temperature, reduction, ignore_index, hard_label_weight,
    backend, inplace_grad, and the family parameter beta / alpha / mu) are those of
    :func:`fastkd.losses.kd_loss`.
    """

    function = staticmethod(kd_loss)
    shown = ("divergence",)

    def __init__(self, divergence: str = "forward_kl", **options: Any) -> None:
        super().__init__(options)
        divergence_options(divergence, **options)
        self.divergence = divergence


class ForwardKLLoss(KDLoss):
    """Module form of :func:`fastkd.losses.forward_kl`."""

    def __init__(self, **options: Any) -> None:
        super().__init__("forward_kl", **options)


class SoftCrossEntropyLoss(KDLoss):
    """Module form of :func:`fastkd.losses.soft_cross_entropy`."""

    def __init__(self, **options: Any) -> None:
        super().__init__("soft_cross_entropy", **options)


class ReverseKLLoss(KDLoss):
    """Module form of :func:`fastkd.losses.reverse_kl`."""

    def __init__(self, **options: Any) -> None:
        super().__init__("reverse_kl", **options)


class JSDLoss(KDLoss):
    """Module form of :func:`fastkd.losses.jsd` (β = teacher weight, default 0.5)."""

    def __init__(self, beta: float = 0.5, **options: Any) -> None:
        super().__init__("jsd", beta=beta, **options)


class SkewKLLoss(KDLoss):
    """Module form of :func:`fastkd.losses.skew_kl` (α default 0.1)."""

    def __init__(self, alpha: float = 0.1, **options: Any) -> None:
        super().__init__("skew_kl", alpha=alpha, **options)


class SkewReverseKLLoss(KDLoss):
    """Module form of :func:`fastkd.losses.skew_reverse_kl` (α default 0.1)."""

    def __init__(self, alpha: float = 0.1, **options: Any) -> None:
        super().__init__("skew_reverse_kl", alpha=alpha, **options)


class TVDLoss(KDLoss):
    """Module form of :func:`fastkd.losses.tvd`."""

    def __init__(self, **options: Any) -> None:
        super().__init__("tvd", **options)


class AKLLoss(KDLoss):
    """Module form of :func:`fastkd.losses.akl` (μ default 0.5)."""

    def __init__(self, mu: float = 0.5, **options: Any) -> None:
        super().__init__("akl", mu=mu, **options)
