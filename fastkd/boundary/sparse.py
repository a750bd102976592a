"""Options, boundary checks and flattening of the sparse (top-k) teacher KL, shared by every backend.

The teacher arrives as (indices [..., k], log-probabilities [..., k]) at temperature 1, as offline
caches store it (see :func:`fastkd.teacher_topk`). Value checks run on the valid tokens only: eagerly
with the offending values on CPU, as ``torch._assert_async`` on CUDA (no host synchronisation) and
under ``torch.compile``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastkd.boundary.inputs import _check_logits, _divisor, valid_tokens
from fastkd.boundary.options import REDUCTIONS, _check_real

# A stored log-probability may exceed 0 by this much (rounding of a third-party cache) before it is an error.
LOGPROB_TOLERANCE = 1e-4
INDEX_DTYPES = (torch.int64, torch.int32)


@dataclass(frozen=True)
class SparseOptions:
    """The non-tensor options of :func:`fastkd.losses.sparse_kl`, validated once."""

    renormalize: bool = True
    temperature: float = 1.0
    reduction: str = "mean"
    ignore_index: int = -100

    def __post_init__(self) -> None:
        if not isinstance(self.renormalize, bool):
            raise TypeError(f"renormalize must be a bool, got {type(self.renormalize).__name__}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {self.reduction!r}; expected one of {list(REDUCTIONS)}")
        _check_real("temperature", self.temperature)
        if not self.temperature > 0.0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


@dataclass(frozen=True)
class SparseInputs:
    """Student [N, V], indices int64 [N, k], teacher log-probs [N, k], its log rest mass fp32 [N] (-inf
    without a rest bucket), valid tokens bool [N] (``all_valid``: no labels and no mask were given),
    leading shape and the mean's divisor."""

    student: torch.Tensor
    indices: torch.Tensor
    logprobs: torch.Tensor
    rest: torch.Tensor
    valid: torch.Tensor
    all_valid: bool
    leading_shape: torch.Size
    divisor: torch.Tensor


def _check_teacher(indices: object, logprobs: object, student: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if not isinstance(indices, torch.Tensor) or not isinstance(logprobs, torch.Tensor):
        raise TypeError(
            "teacher_topk_indices and teacher_topk_logprobs must be torch.Tensors, got "
            f"{type(indices).__name__} and {type(logprobs).__name__}"
        )
    if indices.dtype not in INDEX_DTYPES:
        raise TypeError(f"teacher_topk_indices must be int64 or int32, got {indices.dtype}")
    _check_logits("teacher_topk_logprobs", logprobs)
    if indices.shape != logprobs.shape or indices.shape[:-1] != student.shape[:-1]:
        raise ValueError(
            "teacher_topk_indices and teacher_topk_logprobs must both have shape [..., k] with the student "
            f"logits' leading shape {tuple(student.shape[:-1])}, got {tuple(indices.shape)} and "
            f"{tuple(logprobs.shape)}"
        )
    k, vocab = indices.shape[-1], student.shape[-1]
    if not 1 <= k <= vocab:
        raise ValueError(f"the number of teacher slots k must lie in [1, V = {vocab}], got k = {k}")
    for name, x in (("teacher_topk_indices", indices), ("teacher_topk_logprobs", logprobs)):
        if x.device != student.device:
            raise ValueError(f"{name} is on {x.device} but the student logits are on {student.device}")
    return indices, logprobs


def _check_values(indices: torch.Tensor, logprobs: torch.Tensor, valid: torch.Tensor, vocab: int) -> None:
    """Indices in [0, V) and unique per row, log-probs not NaN and ≤ 0 (+ tolerance), on valid rows."""
    ordered = indices.sort(-1).values
    problems = [
        (
            ((indices < 0) | (indices >= vocab)).any(-1),
            f"teacher_topk_indices must lie in [0, {vocab})",
            indices,
        ),
        ((ordered[:, 1:] == ordered[:, :-1]).any(-1), "teacher_topk_indices repeat within a token", ordered),
        (logprobs.isnan().any(-1), "teacher_topk_logprobs contain NaN", logprobs),
        (
            (logprobs > LOGPROB_TOLERANCE).any(-1),
            f"teacher_topk_logprobs must be log-probabilities (<= 0, tolerance {LOGPROB_TOLERANCE})",
            logprobs,
        ),
    ]
    for bad, message, values in problems:
        bad_rows = bad & valid
        if valid.is_cuda or torch.compiler.is_compiling():
            torch._assert_async(~bad_rows.any(), message)
        elif bool(bad_rows.any()):
            raise ValueError(f"{message}; first offending token has {values[bad_rows][0].tolist()[:16]}")


def has_rest_bucket(renormalize: bool, k: int, vocab: int) -> bool:
    """A rest bucket exists without renormalisation unless the support is the whole vocabulary."""
    return not renormalize and k < vocab


def rest_log_mass(logprobs: torch.Tensor, renormalize: bool, vocab: int) -> torch.Tensor:
    """log(1 − Σ_k p_k) per row, fp32 [N], from an fp64 log-sum-exp and expm1 (no cancellation).

    -inf (no rest bucket) with ``renormalize``, when the support is the whole vocabulary (k = V: the
    stored mass deficit is rounding, not mass), or when the stored mass reaches 1.
    """
    rows, k = logprobs.shape
    if not has_rest_bucket(renormalize, k, vocab):
        return torch.full((rows,), float("-inf"), dtype=torch.float32, device=logprobs.device)
    mass = torch.logsumexp(logprobs.to(torch.float64), dim=-1).clamp_max(0.0)
    return torch.log(-torch.expm1(mass)).to(torch.float32)


def prepare_sparse(
    student_logits: object,
    indices: object,
    logprobs: object,
    options: SparseOptions,
    labels: object = None,
    mask: object = None,
    num_items_in_batch: object = None,
) -> SparseInputs:
    """Validate the tensors of a sparse-teacher call and flatten them to [N, V] and [N, k]."""
    student = _check_logits("student_logits", student_logits)
    indices, logprobs = _check_teacher(indices, logprobs, student)
    leading, vocab, k = student.shape[:-1], student.shape[-1], indices.shape[-1]
    valid, _ = valid_tokens(leading, student.device, labels, mask, options.ignore_index)
    flat_idx = indices.reshape(-1, k)
    flat_lp = logprobs.detach().reshape(-1, k)
    _check_values(flat_idx, flat_lp, valid, vocab)
    return SparseInputs(
        student=student.reshape(-1, vocab),
        indices=flat_idx.to(torch.int64),
        logprobs=flat_lp,
        rest=rest_log_mass(flat_lp, options.renormalize, vocab),
        valid=valid,
        all_valid=labels is None and mask is None,
        leading_shape=leading,
        divisor=_divisor(valid, options.reduction, num_items_in_batch),
    )
