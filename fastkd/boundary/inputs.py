"""Boundary checks and flattening shared by every backend: shapes, dtypes, devices, valid tokens, divisor."""

from __future__ import annotations

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
        return num_items_in_batch.detach().reshape(()).to(device=device, dtype=torch.float32).clamp_min(1.0)
    if isinstance(num_items_in_batch, bool) or not isinstance(num_items_in_batch, int):
        raise TypeError(
            f"num_items_in_batch must be an int or a tensor, got {type(num_items_in_batch).__name__}"
        )
    if num_items_in_batch < 1:
        raise ValueError(f"num_items_in_batch must be >= 1, got {num_items_in_batch}")
    return torch.full((), float(num_items_in_batch), dtype=torch.float32, device=device)


def _check_label_range(labels: torch.Tensor, valid: torch.Tensor, vocab: int) -> None:
    in_range = ((labels >= 0) & (labels < vocab)) | ~valid
    message = f"labels of valid tokens must lie in [0, {vocab}) for the hard-label term"
    if labels.is_cuda:
        torch._assert_async(in_range.all(), message)
    elif not bool(in_range.all()):
        bad = labels[~in_range][:5].tolist()
        raise ValueError(f"{message}; got {bad}")


def valid_tokens(
    leading: torch.Size, device: torch.device, labels: object, mask: object, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Bool [N]: labels != ignore_index and mask (each where given), and the labels as int64 [N] or None."""
    valid = torch.ones(leading, dtype=torch.bool, device=device)
    if labels is not None:
        labels = _check_token_tensor("labels", labels, leading, device)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
            raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
        valid = valid & (labels != ignore_index)
        labels = labels.reshape(-1).to(torch.int64)
    if mask is not None:
        mask = _check_token_tensor("mask", mask, leading, device)
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
        valid = valid & mask
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
        _check_label_range(labels, valid, vocab)
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
