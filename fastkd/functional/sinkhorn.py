"""SinKD (Cui et al., "SinKD: Sinkhorn Distance Minimization for Knowledge Distillation",
arXiv 2402.17110): the batch-wise Sinkhorn distance between student and teacher distributions, and
the authors' GLUE objective.

The B valid rows of a batch are the support points. With P_s = softmax(Z_s/τ) (student, gets the
gradient) and P_t = softmax(Z_t/τ) (teacher, detached), W_ij = ‖P_s[i] − P_t[j]‖₁, K = exp(−W/ε), then
n_iters rounds of K ← K/rowsum(K); K ← K/colsum(K); Π = the final K and S = scale·Σ_ij Π_ij W_ij. The
gradient is autograd's through the unrolled rounds (through W via P_s and through every normalisation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastkd.backends import resolve
from fastkd.boundary.inputs import check_label_range, prepare, unit_stride
from fastkd.boundary.options import DivergenceOptions, _check_unit
from fastkd.boundary.sinkhorn import SinkhornOptions
from fastkd.functional.divergence import soft_cross_entropy
from fastkd.functions.sinkhorn import SinkhornFunction
from fastkd.reference import sinkhorn as reference_sinkhorn


def sinkhorn_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    tau: float = 2.0,
    epsilon: float = 0.1,
    n_iters: int = 20,
    scale: float = 1e-3,
    log_domain: bool | str = "auto",
    mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    ignore_index: int = -100,
    backend: str = "auto",
) -> torch.Tensor:
    """Sinkhorn distance S (fp32 scalar) between the student's and the teacher's rows.

    Logits [B, C] (classification) or [..., V] (tokens, flattened to [B, V]); fp32, bf16 or fp16. Rows
    that ``mask`` (bool, leading shape) excludes or whose ``labels`` equal ``ignore_index`` are dropped
    from the support; no valid row gives 0. ``log_domain``: True/False, or ``"auto"`` = log-sum-exp
    normalisations when the plain kernel could underflow in fp32 (2/ε + ln B > 80; see
    :meth:`SinkhornOptions.use_log_domain`). ``backend``: ``"triton"`` (fused kernels, CUDA), ``"torch"``
    (the unrolled reference), ``"auto"`` (Triton for CUDA tensors, else torch).
    Defaults τ = 2, ε = 0.1, n_iters = 20, scale = 1e-3 as in the paper's code.
    """
    options = SinkhornOptions(tau, epsilon, n_iters, scale, log_domain)
    flat = prepare(student_logits, teacher_logits, DivergenceOptions(ignore_index=ignore_index), labels, mask)
    name = resolve(backend, flat.student)
    if name == "torch":
        return reference_sinkhorn.sinkhorn_distance(flat.student, flat.teacher, flat.valid, options)
    return fused_sinkhorn(
        flat.student, flat.teacher, flat.valid, options, "torch" if name == "cpu" else "triton"
    )


def fused_sinkhorn(
    student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor, options: SinkhornOptions, impl: str
) -> torch.Tensor:
    """The fused path on flattened [B, V] logits: ``impl`` "triton" (kernels) or "torch" (chunked ops)."""
    return SinkhornFunction.apply(unit_stride(student), unit_stride(teacher), valid, options, impl)


def _hard_cross_entropy(
    student_logits: torch.Tensor, labels: torch.Tensor, ignore_index: int
) -> torch.Tensor:
    """Mean CE(z, labels) over the rows whose label is not ``ignore_index`` (0 for none); labels of
    valid rows must lie in [0, C) (ValueError); ignored rows are zeroed first, so NaN there never
    leaks into the loss or the gradient."""
    flat_labels = labels.reshape(-1).to(torch.int64)
    logits = student_logits.reshape(flat_labels.shape[0], student_logits.shape[-1]).float()
    valid = flat_labels != ignore_index
    check_label_range(flat_labels, valid, logits.shape[-1])
    safe = torch.where(valid[:, None], logits, 0.0)
    rows = F.cross_entropy(safe, flat_labels.masked_fill(~valid, 0), reduction="none")
    return torch.where(valid, rows, 0.0).sum() / valid.sum().clamp_min(1)


def sinkd_objective(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    sinkhorn_weight: float = 0.8,
    ignore_index: int = -100,
    backend: str = "auto",
    return_parts: bool = False,
    **sinkhorn_options: object,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SinKD's GLUE objective: α·KD + (1 − α)·CE(labels) + sinkhorn_weight·S.

    KD is the CE-form soft cross-entropy −Σ p log q at ``temperature`` (no T²), averaged over rows;
    CE is the hard-label cross-entropy (T = 1); S is :func:`sinkhorn_loss` with ``sinkhorn_options``
    (tau, epsilon, n_iters, scale, log_domain) over the rows whose label is not ``ignore_index``.
    ``return_parts`` also returns {"kd", "ce", "sinkhorn"} (detached) for logging.
    """
    _check_unit("alpha", alpha)
    DivergenceOptions(temperature=temperature)
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"sinkd_objective needs integer class labels (a tensor), got {type(labels).__name__}")
    if isinstance(sinkhorn_weight, bool) or not isinstance(sinkhorn_weight, (int, float)):
        raise TypeError(f"sinkhorn_weight must be a float, got {type(sinkhorn_weight).__name__}")
    if not sinkhorn_weight >= 0.0:
        raise ValueError(f"sinkhorn_weight must be >= 0, got {sinkhorn_weight}")
    kd = soft_cross_entropy(
        student_logits, teacher_logits, labels=labels, ignore_index=ignore_index,
        temperature=temperature, backend=backend,
    )  # fmt: skip
    ce = _hard_cross_entropy(student_logits, labels, ignore_index)
    s = sinkhorn_loss(
        student_logits, teacher_logits, labels=labels, ignore_index=ignore_index, backend=backend,
        **sinkhorn_options,
    )  # fmt: skip
    total = alpha * kd + (1.0 - alpha) * ce + sinkhorn_weight * s
    if return_parts:
        return total, {"kd": kd.detach(), "ce": ce.detach(), "sinkhorn": s.detach()}
    return total
