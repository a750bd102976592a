"""Boundary checks and flattening shared by every backend: shapes, dtypes, devices, valid tokens, divisor."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from fastkd.boundary.options import DivergenceOptions

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


@dataclass(frozen=True)
class FlatInputs:
    """Logits flattened to [N, V] (teacher detached), per-token validity and the mean's divisor."""

    student: torch.Tensor
    teacher: torch.Tensor
    valid: torch.Tensor
    labels: torch.Tensor | None
    leading_shape: torch.Size
    divisor: torch.Tensor


def vocabulary_mismatch(student_vocab: int, teacher_vocab: int) -> str:
    """The message for teacher V ≠ student V, shared by the logit-level and fused-linear losses."""
    common = min(student_vocab, teacher_vocab)
    return (
        f"the teacher's vocabulary has {teacher_vocab} ids but the student's has {student_vocab}; both "
        "models must score one vocabulary. If the extra ids of the larger one are padding (e.g. Qwen2.5 "
        f"0.5B 151936 vs 7B 152064), slice its weight or logits to the first {common} ids "
        f"(weight[:{common}], logits[..., :{common}])"
    )


def _check_logits(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a floating tensor (float32, bfloat16, float16 or float64), got {x.dtype}"
        )
    if x.dim() < 1 or x.shape[-1] < 1:
        raise ValueError(f"{name} must have shape [..., V] with V >= 1, got {tuple(x.shape)}")
    return x


def _check_token_tensor(name: str, x: object, leading: torch.Size, device: torch.device) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.shape != leading:
        raise ValueError(f"{name} must have the logits' leading shape {tuple(leading)}, got {tuple(x.shape)}")
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but the logits are on {device}")
    return x


def _divisor(valid: torch.Tensor, reduction: str, num_items_in_batch: object) -> torch.Tensor:
    device = valid.device
    if reduction != "mean":
        return torch.ones((), dtype=torch.float32, device=device)
    if num_items_in_batch is None:
        return valid.sum().to(torch.float32).clamp_min(1.0)
    if isinstance(num_items_in_batch, torch.Tensor):
        if num_items_in_batch.numel() != 1:
            raise ValueError(
                f"num_items_in_batch must hold one number, got shape {tuple(num_items_in_batch.shape)}"
            )
        count = num_items_in_batch.detach().reshape(()).to(device=device, dtype=torch.float32)
        message = "num_items_in_batch must be >= 1"
        if count.is_cuda or torch.compiler.is_compiling():
            torch._assert_async(count >= 1, message)
        elif not bool(count >= 1):
            raise ValueError(f"{message}, got {count.item():g}")
        return count
    if isinstance(num_items_in_batch, bool) or not isinstance(num_items_in_batch, int):
        raise TypeError(
            f"num_items_in_batch must be an int or a tensor, got {type(num_items_in_batch).__name__}"
        )
    if num_items_in_batch < 1:
        raise ValueError(f"num_items_in_batch must be >= 1, got {num_items_in_batch}")
    return torch.full((), float(num_items_in_batch), dtype=torch.float32, device=device)


def check_label_range(labels: torch.Tensor, valid: torch.Tensor, vocab: int) -> None:
    in_range = ((labels >= 0) & (labels < vocab)) | ~valid
    message = f"labels of valid tokens must lie in [0, {vocab})"
    if labels.is_cuda:
        torch._assert_async(in_range.all(), message)
    elif not bool(in_range.all()):
        bad = labels[~in_range][:5].tolist()
        raise ValueError(f"{message}; got {bad}")


def _check_negative_labels(labels: torch.Tensor, ignore_index: int) -> None:
    """A negative label other than ``ignore_index`` is an error (never a silently valid token)."""
    bad = (labels < 0) & (labels != ignore_index)
    message = f"labels must be >= 0 or ignore_index ({ignore_index})"
    if labels.is_cuda or torch.compiler.is_compiling():
        torch._assert_async(~bad.any(), message)
    elif bool(bad.any()):
        raise ValueError(f"{message}; got {labels[bad][:5].tolist()}")


def valid_tokens(
    leading: torch.Size, device: torch.device, labels: object, mask: object, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Bool [N]: labels != ignore_index and mask (each where given; an integer mask counts nonzero as
    valid), and the labels as int64 [N] or None."""
    valid = torch.ones(leading, dtype=torch.bool, device=device)
    if labels is not None:
        labels = _check_token_tensor("labels", labels, leading, device)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
            raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
        valid = valid & (labels != ignore_index)
        _check_negative_labels(labels, ignore_index)
        labels = labels.reshape(-1).to(torch.int64)
    if mask is not None:
        mask = _check_token_tensor("mask", mask, leading, device)
        if mask.dtype.is_floating_point or mask.is_complex():
            raise TypeError(f"mask must be a bool or integer (0/1) tensor, got {mask.dtype}")
        valid = valid & (mask != 0)  # HF's attention_mask is int64: nonzero means valid
    return valid.reshape(-1), labels


def prepare(
    student_logits: object,
    teacher_logits: object,
    options: DivergenceOptions,
    labels: object = None,
    mask: object = None,
    num_items_in_batch: object = None,
) -> FlatInputs:
    """Validate the tensors of a divergence call and flatten them to [N, V]."""
    student = _check_logits("student_logits", student_logits)
    teacher = _check_logits("teacher_logits", teacher_logits)
    if student.shape != teacher.shape:
        hint = ""
        if student.shape[:-1] == teacher.shape[:-1]:
            hint = ": " + vocabulary_mismatch(student.shape[-1], teacher.shape[-1])
        raise ValueError(
            f"student_logits and teacher_logits must have the same shape, got {tuple(student.shape)} "
            f"and {tuple(teacher.shape)}{hint}"
        )
    if student.device != teacher.device:
        raise ValueError(f"student_logits is on {student.device} but teacher_logits is on {teacher.device}")
    leading, vocab = student.shape[:-1], student.shape[-1]
    valid, labels = valid_tokens(leading, student.device, labels, mask, options.ignore_index)
    if labels is None and options.needs_labels:
        raise ValueError(f"hard_label_weight={options.hard_label_weight} needs labels, got labels=None")
    if options.needs_labels:
        check_label_range(labels, valid, vocab)
    if teacher.dtype == torch.float64 and student.dtype != torch.float64:
        teacher = teacher.to(torch.float32)  # the loss is computed in fp32 anyway; fused kernels take it
    return FlatInputs(
        student=student.reshape(-1, vocab),
        teacher=teacher.detach().reshape(-1, vocab),
        valid=valid,
        labels=labels,
        leading_shape=leading,
        divisor=_divisor(valid, options.reduction, num_items_in_batch),
    )


def reduce_rows(
    loss_rows: torch.Tensor, leading_shape: torch.Size, divisor: torch.Tensor, reduction: str
) -> torch.Tensor:
    """Apply the reduction to per-token losses that are already 0 at invalid tokens."""
    if reduction == "none":
        return loss_rows.reshape(leading_shape)
    total = loss_rows.sum()
    return total / divisor if reduction == "mean" else total


def unit_stride(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when its last dimension has stride 1 (what the fused kernels need), else a
    contiguous copy."""
    return x if x.stride(-1) == 1 else x.contiguous()


def gradient_wanted(student: torch.Tensor) -> bool:
    """Whether autograd will want the student's gradient: grad mode is on and the student requires it.
    Otherwise (evaluation, ``torch.no_grad()``) the fused losses run a loss-only pass."""
    return torch.is_grad_enabled() and student.requires_grad


def check_inplace_grad(student: torch.Tensor) -> None:
    """``inplace_grad=True`` writes the gradient over ``student``: refuse the tensors where that is wrong.

    A leaf that requires grad (or a view of one) would get a ``.grad`` aliasing its own (overwritten)
    values; an expanded
    (stride-0) or self-overlapping tensor shares memory between rows, so the rows' gradients would
    overwrite each other.
    """
    root = student
    while root._base is not None:  # a view of a leaf shares the leaf's memory
        root = root._base
    if root.is_leaf and root.requires_grad:
        raise ValueError(
            "inplace_grad=True would overwrite a leaf tensor that requires grad (its .grad would alias "
            "it); pass the logits of a model (a non-leaf tensor), or inplace_grad=False"
        )
    shared = any(
        stride == 0 and size > 1 for stride, size in zip(student.stride(), student.shape, strict=True)
    )
    if shared or torch._debug_has_internal_overlap(student) != 0:
        raise ValueError(
            "inplace_grad=True needs student logits that own their memory, got an expanded or "
            f"overlapping tensor (shape {tuple(student.shape)}, strides {student.stride()}); pass a "
            "contiguous tensor or inplace_grad=False"
        )


CHECK_FINITE_VARIABLE = "FASTKD_CHECK_FINITE"


def check_finite_inputs(
    option: bool | None, flat: FlatInputs, temperature: float, teacher: bool = True
) -> None:
    """The opt-in check (``check_finite=True``, or ``FASTKD_CHECK_FINITE=1`` when the option is None):
    a ValueError naming the first valid token (its index in the leading shape) whose row of the
    student (and, if ``teacher``, the teacher) [N, V] in ``flat`` holds NaN or +inf, or overflows fp32
    at ``temperature``, or is −inf everywhere, with the input and the value. Without the check such a
    token's loss is NaN. Reads the inputs once more and synchronises with the device."""
    if not (os.environ.get(CHECK_FINITE_VARIABLE, "0") == "1" if option is None else option):
        return
    inputs = {"student_logits": flat.student}
    if teacher:
        inputs["teacher_logits"] = flat.teacher
    leading, valid = flat.leading_shape, flat.valid
    for name, x in inputs.items():
        tempered = x.detach().to(torch.float32) / temperature
        bad = tempered.isnan() | (tempered == float("inf"))
        rows = (bad.any(-1) | (tempered == float("-inf")).all(-1)) & valid
        if not bool(rows.any()):
            continue
        row = int(rows.nonzero()[0, 0])
        token = tuple(int(i) for i in torch.unravel_index(torch.tensor(row), leading)) if leading else ()
        if bool(bad[row].any()):
            column = int(bad[row].nonzero()[0, 0])
            what = f"holds {x[row, column].item()} at vocabulary index {column}"
            if temperature != 1.0 and bool(x[row, column].isfinite()):
                what += f" (+inf at temperature {temperature}: it overflows fp32)"
        else:
            what = "is -inf everywhere"
        raise ValueError(f"check_finite: the row of {name} at token {token} {what}")
