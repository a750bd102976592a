"""TRL's generalised JSD loss with TRL's signature and reductions, on fastkd's fused kernels.

``generalized_jsd_loss`` is a drop-in for ``trl.experimental.gkd.GKDTrainer.generalized_jsd_loss``
(TRL 1.16): the same arguments, defaults, β = 0 / 1 endpoints, −100 masking and reductions, so a TRL
user replaces one import and gets the same numbers (computed in fp32, returned in fp32). It needs no
TRL install.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastkd.functional.divergence import kd_loss
from fastkd.reference.divergence import _kl_terms, _log_mixture

TRL_REDUCTIONS: tuple[str, ...] = ("batchmean", "sum", "mean", "none")
IGNORE_INDEX = -100  # TRL's label padding, fixed in its loss


def _elementwise_jsd(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float, temperature: float
) -> torch.Tensor:
    """The per-vocabulary-element terms [..., V] whose sum over V is the per-token loss (fp32)."""
    lq = F.log_softmax(student_logits.float() / temperature, dim=-1)
    lp = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    if beta == 0:
        return _kl_terms(lp, lq)
    if beta == 1:
        return _kl_terms(lq, lp)
    lm = _log_mixture(beta, lp, 1.0 - beta, lq)
    return beta * _kl_terms(lp, lm) + (1.0 - beta) * _kl_terms(lq, lm)


def generalized_jsd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    beta: float = 0.5,
    temperature: float = 1.0,
    reduction: str = "batchmean",
    num_items_in_batch: int | torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Generalised JSD β·KL(p‖m) + (1−β)·KL(q‖m), m = βp + (1−β)q (GKD, arXiv 2306.13649, Eq. 1).

    p = softmax(u/T) is the teacher, q = softmax(z/T) the student; β = 0 is forward KL(p‖q) and β = 1
    reverse KL(q‖p) exactly (TRL's endpoints). Logits [B, T, V] (any leading shape); ``labels`` [B, T]
    with −100 at ignored positions. No T² factor. Reductions, as TRL defines them:

    - ``num_items_in_batch`` given: Σ over valid tokens / num_items_in_batch, whatever ``reduction``;
    - ``"batchmean"`` (default): Σ / number of valid tokens (at least 1) with labels, Σ / B without;
    - ``"sum"``: Σ; ``"mean"``: Σ / (valid tokens · V), the mean over vocabulary elements (NaN when no
      token is valid, as in TRL);
    - ``"none"``: the per-element terms, [B, T, V] without labels, [valid tokens, V] with them (this
      one is computed by PyTorch: a fused kernel keeps per-token sums only).

    ``backend`` (fastkd's, keyword-only) picks the kernel; the teacher gets no gradient.
    """
    if reduction not in TRL_REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; expected one of {list(TRL_REDUCTIONS)}")
    if reduction == "none" and num_items_in_batch is None:
        terms = _elementwise_jsd(student_logits, teacher_logits, beta, temperature)
        return terms if labels is None else terms[labels != IGNORE_INDEX]
    options = {"labels": labels, "temperature": temperature, "backend": backend, "beta": beta}
    if num_items_in_batch is not None:
        return kd_loss(
            student_logits,
            teacher_logits,
            "jsd",
            reduction="mean",
            num_items_in_batch=num_items_in_batch,
            **options,
        )
    if reduction == "batchmean" and labels is not None:
        return kd_loss(student_logits, teacher_logits, "jsd", reduction="mean", **options)
    total = kd_loss(student_logits, teacher_logits, "jsd", reduction="sum", **options)
    if reduction == "sum":
        return total
    if reduction == "batchmean":
        return total / max(student_logits.shape[0], 1)
    count = student_logits.shape[:-1].numel() if labels is None else (labels != IGNORE_INDEX).sum()
    return total / (count * student_logits.shape[-1])
