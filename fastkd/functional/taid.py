"""TAID, temporally adaptive interpolated distillation (Shing et al., arXiv 2501.16937), as a function."""

from __future__ import annotations

import torch

from fastkd.backends import resolve
from fastkd.boundary.inputs import (
    FlatInputs,
    check_finite_inputs,
    check_inplace_grad,
    gradient_wanted,
    prepare,
    reduce_rows,
    unit_stride,
)
from fastkd.boundary.options import DivergenceOptions, _check_unit
from fastkd.functions.taid import TAIDFunction
from fastkd.ops.taid import taid_rows
from fastkd.reference import taid as reference_taid

TAID_FUSED = ("triton", "cpu")  # the Triton kernel and the C++ divergence kernel's TAID mode


def interpolation_weight(t: object, like: torch.Tensor) -> torch.Tensor:
    """``t`` as a 0-dim tensor on ``like``'s device (fp64 for fp64 logits, else fp32), without a sync.

    A Python float must lie in [0, 1] (ValueError otherwise). A tensor must be 0-dim, floating and on
    the logits' device; its range is asserted on the device (``torch._assert_async``: a RuntimeError on
    CPU, a device-side assert on CUDA), so that checking it never waits for the GPU.
    """
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    if not isinstance(t, torch.Tensor):
        _check_unit("t", t)
        return torch.full((), float(t), dtype=dtype, device=like.device)
    if t.dim() != 0:
        raise ValueError(f"t must be a Python float or a 0-dim tensor, got shape {tuple(t.shape)}")
    if not t.dtype.is_floating_point:
        raise TypeError(f"t must be a floating tensor, got {t.dtype}")
    if t.device != like.device:
        raise ValueError(f"t is on {t.device} but the logits are on {like.device}")
    t = t.detach().to(dtype, copy=True)
    torch._assert_async((t >= 0) & (t <= 1), "TAID's interpolation weight t must lie in [0, 1]")
    return t


def _fused(
    flat: FlatInputs, t: torch.Tensor, options: DivergenceOptions, inplace_grad: bool, backend: str
) -> torch.Tensor:
    student, teacher = unit_stride(flat.student), unit_stride(flat.teacher)
    if not gradient_wanted(student):  # evaluation: loss only, nothing written
        rows = taid_rows(backend, student, teacher, flat.valid, t, flat.divisor, None, options.temperature)
        return reduce_rows(rows, flat.leading_shape, flat.divisor, options.reduction)
    return TAIDFunction.apply(
        student,
        teacher,
        flat.valid,
        t,
        flat.divisor,
        options,
        flat.leading_shape,
        inplace_grad,
        backend,
    )


def taid(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    t: float | torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    ignore_index: int = -100,
    temperature: float = 1.0,
    reduction: str = "mean",
    num_items_in_batch: int | torch.Tensor | None = None,
    backend: str = "auto",
    inplace_grad: bool = False,
    check_finite: bool | None = None,
) -> torch.Tensor:
    """TAID loss: cross-entropy of the student to the interpolated target (arXiv 2501.16937).

    With q = softmax(z/T) (student z) and the teacher's logits u, the target is
    p_t = softmax((1 − t)·stopgrad(z/T) + t·u/T): it mixes logits, not probabilities, and moves from
    the student itself (t = 0: loss H(q), gradient 0) to the teacher (t = 1: ``soft_cross_entropy``).
    Per token ℓ = −Σ p_t log q, gradient (q − p_t)/T; no T² factor.

    ``student_logits``, ``teacher_logits``: [..., V] (fp32, bf16 or fp16; the teacher is detached).
    ``t``: a Python float in [0, 1] or a 0-dim floating tensor on the logits' device (read by the
    kernel from memory: changing it neither syncs nor recompiles); :class:`fastkd.TAIDSchedule` moves
    it adaptively. The other options are those of :func:`fastkd.losses.kd_loss` (labels, mask,
    ignore_index, temperature 1.0, reduction "mean", num_items_in_batch, inplace_grad, check_finite);
    ``backend``: "auto" (default), "triton", "cpu" (the C++ divergence kernel's TAID mode) or "torch".
    The loss is fp32 ([...] for ``"none"``); the student's gradient has the student's dtype.
    Non-finite inputs follow :mod:`fastkd.functional.divergence` (a NaN / +inf / all −inf row in either
    input, whatever t, gives a NaN loss and gradient row; ignored rows never leak). Without autograd the
    fused backend computes the loss only.
    """
    # TAID is the soft cross-entropy to p_t: the core options carry its temperature, reduction, ignore_index.
    options = DivergenceOptions.build(
        "soft_cross_entropy", temperature=temperature, reduction=reduction, ignore_index=ignore_index
    )
    flat = prepare(student_logits, teacher_logits, options, labels, mask, num_items_in_batch)
    check_finite_inputs(check_finite, flat, temperature)
    weight = interpolation_weight(t, flat.student)
    name = resolve(backend, flat.student, fused=TAID_FUSED)
    if name == "torch":
        return reference_taid.taid_loss(flat, weight, options)
    if inplace_grad and gradient_wanted(flat.student):
        check_inplace_grad(student_logits)
    return _fused(flat, weight, options, inplace_grad, name)
