"""fp64 oracle for the fastkd divergence family, written directly from ``shared/spec/losses.md``.

Deliberately independent of the library: it imports nothing from ``fastkd`` and favours plain,
obviously-correct float64 code over speed. Every backend is compared against ``oracle_kd_loss``.

Conventions (spec, "Notation and conventions"): q = softmax(student / T), p = softmax(teacher / T),
the teacher is detached, 0·log 0 = 0, -inf logits have probability 0 and give neither NaN nor a
gradient, logs of mixtures use logaddexp, invalid tokens contribute 0 to value and gradient.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

NEG_INF = float("-inf")
DEFAULT_PARAMS: dict[str, float | None] = {
    "forward_kl": None,
    "soft_cross_entropy": None,
    "reverse_kl": None,
    "jsd": 0.5,
    "skew_kl": 0.1,
    "skew_reverse_kl": 0.1,
    "tvd": None,
    "akl": 0.5,
}
DIVERGENCES = tuple(DEFAULT_PARAMS)
AKL_DENOM_MIN = 1e-8


def _log_weight(w: float) -> float:
    """log(w) with log(0) = -inf."""
    return math.log(w) if w > 0 else NEG_INF


def _kl(log_a: Tensor, log_b: Tensor) -> Tensor:
    """Σ_v a (log a − log b) over the last dim; terms with a = 0 are exactly 0 (value and gradient).

    Where a > 0 and b = 0 the term is +inf: that is the true value, not an error.
    """
    support = log_a > NEG_INF
    la = torch.where(support, log_a, 0.0)
    lb = torch.where(support, log_b, 0.0)
    return torch.where(support, la.exp() * (la - lb), 0.0).sum(-1)


def _cross_entropy(log_a: Tensor, log_b: Tensor) -> Tensor:
    """−Σ_v a log b over the last dim, with 0·log 0 = 0."""
    support = log_a > NEG_INF
    la = torch.where(support, log_a, 0.0)
    lb = torch.where(support, log_b, 0.0)
    return -torch.where(support, la.exp() * lb, 0.0).sum(-1)


def _log_mix(w1: float, log_a: Tensor, w2: float, log_b: Tensor) -> Tensor:
    """log(w1·a + w2·b) via logaddexp; -inf (with no NaN in the gradient) where both parts vanish."""
    x = _log_weight(w1) + log_a
    y = _log_weight(w2) + log_b
    support = (x > NEG_INF) | (y > NEG_INF)
    mixed = torch.logaddexp(torch.where(support, x, 0.0), torch.where(support, y, 0.0))
    return torch.where(support, mixed, NEG_INF)


def _akl_weights(logp: Tensor, logq: Tensor, mu: float) -> tuple[Tensor, Tensor]:
    """Adaptive-KL weights (w_H, w_T); constants (no gradient)."""
    p = logp.detach().exp()
    q = logq.detach().exp()
    sorted_p, order = torch.sort(p, dim=-1, descending=True, stable=True)
    head_sorted = sorted_p.cumsum(-1) <= mu
    head_sorted[..., 0] = True  # the top-1 teacher token is always in the head
    head = torch.zeros_like(head_sorted).scatter(-1, order, head_sorted)
    err = (p - q).abs()
    g_head = torch.where(head, err, 0.0).sum(-1)
    g_tail = torch.where(head, 0.0, err).sum(-1)
    denom = (g_head + g_tail).clamp_min(AKL_DENOM_MIN)
    return g_head / denom, g_tail / denom


def _check_param(divergence: str, param: float) -> None:
    if divergence in ("jsd", "skew_kl", "skew_reverse_kl") and not 0.0 <= param <= 1.0:
        raise ValueError(f"{divergence}: parameter must lie in [0, 1], got {param}")


def soft_per_token(logp: Tensor, logq: Tensor, divergence: str, param: float | None = None) -> Tensor:
    """Per-token soft loss ℓ_n from teacher / student log-probabilities [N, V] (float64)."""
    if divergence not in DEFAULT_PARAMS:
        raise ValueError(f"unknown divergence {divergence!r}; expected one of {DIVERGENCES}")
    if param is None:
        param = DEFAULT_PARAMS[divergence]
    if param is not None:
        param = float(param)
        _check_param(divergence, param)
    if divergence == "forward_kl":
        return _kl(logp, logq)
    if divergence == "soft_cross_entropy":
        return _cross_entropy(logp, logq)
    if divergence == "reverse_kl":
        return _kl(logq, logp)
    if divergence == "jsd":
        beta = param
        if beta == 0.0:
            return _kl(logp, logq)
        if beta == 1.0:
            return _kl(logq, logp)
        logm = _log_mix(beta, logp, 1.0 - beta, logq)
        return beta * _kl(logp, logm) + (1.0 - beta) * _kl(logq, logm)
    if divergence == "skew_kl":
        return _kl(logp, _log_mix(param, logp, 1.0 - param, logq))
    if divergence == "skew_reverse_kl":
        return _kl(logq, _log_mix(1.0 - param, logp, param, logq))
    if divergence == "tvd":
        return 0.5 * (logp.exp() - logq.exp()).abs().sum(-1)
    w_head, w_tail = _akl_weights(logp, logq, param)
    return w_head * _kl(logp, logq) + w_tail * _kl(logq, logp)


def _flat_leading(t: Tensor | None, lead: torch.Size, name: str) -> Tensor | None:
    if t is None:
        return None
    if t.shape != lead:
        raise ValueError(f"{name} shape {tuple(t.shape)} must equal the logits' leading shape {tuple(lead)}")
    return t.reshape(-1)


def valid_tokens(
    lead: torch.Size, device: torch.device, labels: Tensor | None, mask: Tensor | None, ignore_index: int
) -> Tensor:
    """Boolean [N]: labels != ignore_index (if labels given) AND mask (if given)."""
    n = math.prod(lead)
    valid = torch.ones(n, dtype=torch.bool, device=device)
    flat_labels = _flat_leading(labels, lead, "labels")
    flat_mask = _flat_leading(mask, lead, "mask")
    if flat_labels is not None:
        valid &= flat_labels.to(device) != ignore_index
    if flat_mask is not None:
        valid &= flat_mask.to(device=device, dtype=torch.bool)
    return valid


def _reduce(
    loss: Tensor, valid: Tensor, lead: torch.Size, reduction: str, num_items_in_batch: int | Tensor | None
) -> Tensor:
    if reduction == "none":
        return loss.reshape(lead)
    total = loss.sum()
    if reduction == "sum":
        return total
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if num_items_in_batch is not None:
        divisor = torch.as_tensor(num_items_in_batch, dtype=torch.float64, device=loss.device).reshape(())
    else:
        divisor = valid.sum().to(torch.float64).clamp_min(1.0)  # N_valid = 0 -> 0 / 1 = 0
    return total / divisor


def oracle_kd_loss(
    student: Tensor,
    teacher: Tensor,
    divergence: str,
    *,
    param: float | None = None,
    labels: Tensor | None = None,
    mask: Tensor | None = None,
    ignore_index: int = -100,
    temperature: float = 1.0,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
    hard_label_weight: float = 0.0,
) -> Tensor:
    """fp64 reference KD loss; student / teacher logits [..., V], result float64, grad w.r.t. student."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher must have the same shape, got student {tuple(student.shape)} "
            f"and teacher {tuple(teacher.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    w = float(hard_label_weight)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"hard_label_weight must lie in [0, 1], got {hard_label_weight}")
    if w > 0 and labels is None:
        raise ValueError("hard_label_weight > 0 needs labels")
    if divergence not in DEFAULT_PARAMS:
        raise ValueError(f"unknown divergence {divergence!r}; expected one of {DIVERGENCES}")
    lead, vocab = student.shape[:-1], student.shape[-1]
    valid = valid_tokens(lead, student.device, labels, mask, ignore_index)
    keep = valid[:, None]
    # Invalid rows are replaced by zeros so that garbage (NaN, all -inf) never reaches the gradient.
    z = torch.where(keep, student.to(torch.float64).reshape(-1, vocab), 0.0)
    u = torch.where(keep, teacher.detach().to(torch.float64).reshape(-1, vocab), 0.0)
    logq = torch.log_softmax(z / temperature, dim=-1)
    logp = torch.log_softmax(u / temperature, dim=-1)
    loss = soft_per_token(logp, logq, divergence, param) if w < 1.0 else None
    if w > 0.0:
        target = torch.where(valid, labels.reshape(-1).to(student.device), 0).long()
        hard = -torch.log_softmax(z, dim=-1).gather(-1, target[:, None]).squeeze(-1)  # T = 1
        loss = hard if loss is None else (1.0 - w) * loss + w * hard
    loss = torch.where(valid, loss, 0.0)
    return _reduce(loss, valid, lead, reduction, num_items_in_batch)
