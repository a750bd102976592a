"""RLKD (arXiv 2409.12545): a ranking loss on the peak predictions, alone or added to a KD divergence.

Per valid token with student logits z and teacher logits u (any leading shape [..., V]; fp32, bf16 or
fp16; the teacher is detached): I = the union of the teacher's and the student's top-k columns (exact,
per row, k to 2k columns; ties go to the lower column), a = u[I], b = z[I] (raw logits, no temperature),
r = soft_rank (l2, strength 1, ascending; Blondel et al. 2020, arXiv 2002.08871, as
``torchsort.soft_rank``), ρ = Pearson correlation of r_a and r_b, and

    ranking_loss = 1 − ρ,        rlkd = (1 − ρ) + divergence(z, u) / 2.

Teacher ranks are constants. A row whose a or b values are all equal (zero rank variance, including
k = 1 with a shared top-1 or a one-column vocabulary) has ρ := 0: loss 1, gradient 0. ``-inf`` logits
rank below every finite one and get no gradient. Options as in :func:`fastkd.losses.kd_loss`.
"""

from __future__ import annotations

import torch

from fastkd.backends import resolve
from fastkd.boundary.inputs import FlatInputs, check_finite_inputs, prepare, reduce_rows, unit_stride
from fastkd.boundary.options import DivergenceOptions
from fastkd.functional.divergence import divergence_options
from fastkd.functions.ranking import RankingFunction, RLKDFunction
from fastkd.ops.ranking import MAX_FUSED_K
from fastkd.reference import divergence as reference
from fastkd.reference.ranking import ranking_rows


def check_k(k: object, vocab: int) -> int:
    """k must be a Python int in [1, V]."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be a Python int, got {type(k).__name__} ({k!r})")
    if not 1 <= k <= vocab:
        raise ValueError(f"k must lie in [1, V] = [1, {vocab}], got k={k}")
    return k


def _fused(backend: str, flat: FlatInputs, k: int) -> bool:
    """Whether the Triton path runs (there is no C++ ranking kernel); the torch path takes k > 32."""
    name = resolve(backend, flat.student, fused=("triton",))
    if name == "triton" and k > MAX_FUSED_K:
        if backend == "triton":
            raise ValueError(f"backend 'triton' supports k <= {MAX_FUSED_K}, got k={k}; use backend='torch'")
        return False
    return name == "triton"


def ranking_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    k: int = 5,
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | torch.Tensor | None = None,
    backend: str = "auto",
    check_finite: bool | None = None,
) -> torch.Tensor:
    """RLKD ranking loss 1 − ρ(soft_rank(u[I]), soft_rank(z[I])), I = top-k(u) ∪ top-k(z) per token.

    Shapes: logits [..., V]; returns a scalar, or [...] for ``reduction="none"`` (0 at ignored tokens).
    ``k`` (default 5) is the top-k size. The gradient reaches at most 2k columns per token.
    """
    options = DivergenceOptions(reduction=reduction, ignore_index=ignore_index)
    flat = prepare(student_logits, teacher_logits, options, labels, mask, num_items_in_batch)
    check_finite_inputs(check_finite, flat, 1.0)
    k = check_k(k, flat.student.shape[-1])
    if not _fused(backend, flat, k):
        rows = ranking_rows(flat.student, flat.teacher, flat.valid, k)
        return reduce_rows(rows, flat.leading_shape, flat.divisor, reduction)
    return RankingFunction.apply(
        unit_stride(flat.student),
        unit_stride(flat.teacher),
        flat.valid,
        flat.divisor,
        k,
        reduction,
        flat.leading_shape,
    )


def rlkd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    k: int = 5,
    divergence: str = "forward_kl",
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    ignore_index: int = -100,
    temperature: float = 1.0,
    reduction: str = "mean",
    num_items_in_batch: int | torch.Tensor | None = None,
    hard_label_weight: float = 0.0,
    backend: str = "auto",
    beta: float | None = None,
    alpha: float | None = None,
    mu: float | None = None,
    check_finite: bool | None = None,
) -> torch.Tensor:
    """RLKD objective: ranking_loss(k) + kd_loss(divergence) / 2 (arXiv 2409.12545; forward KL default).

    ``divergence``, ``temperature`` (divergence only; the ranking uses raw logits), ``hard_label_weight``
    and the family parameter ``beta`` / ``alpha`` / ``mu`` are those of :func:`fastkd.losses.kd_loss`.
    """
    options = divergence_options(
        divergence,
        beta=beta,
        alpha=alpha,
        mu=mu,
        temperature=temperature,
        reduction=reduction,
        ignore_index=ignore_index,
        hard_label_weight=hard_label_weight,
    )
    flat = prepare(student_logits, teacher_logits, options, labels, mask, num_items_in_batch)
    check_finite_inputs(check_finite, flat, temperature)
    k = check_k(k, flat.student.shape[-1])
    if not _fused(backend, flat, k):
        rows = ranking_rows(flat.student, flat.teacher, flat.valid, k)
        rank = reduce_rows(rows, flat.leading_shape, flat.divisor, reduction)
        return rank + 0.5 * reference.divergence_loss(flat, options)
    return RLKDFunction.apply(
        unit_stride(flat.student),
        unit_stride(flat.teacher),
        flat.valid,
        flat.labels,
        flat.divisor,
        options,
        k,
        flat.leading_shape,
    )
