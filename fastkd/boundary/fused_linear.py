"""Options and boundary checks of the fused-linear KD losses (hidden states + LM-head weights).

Per model, logits = softcap(s·(h Wᵀ + b)) with softcap(x) = c·tanh(x/c) when a cap c is given
(``shared/spec/losses.md``, "Fused-linear KD"). The teacher comes from exactly one source: its hidden
states and weight, precomputed logits, or a top-k cache (indices + log-probabilities); none only for
the pure hard-label cross-entropy (hard_label_weight = 1), source "none".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fastkd.boundary.inputs import (
    FLOAT_DTYPES,
    _divisor,
    check_label_range,
    valid_tokens,
    vocabulary_mismatch,
)
from fastkd.boundary.options import DivergenceOptions, _check_real
from fastkd.boundary.sparse import _check_teacher, _check_values, rest_log_mass

SOURCES = ("hidden", "logits", "topk", "none")
GRAD_WEIGHT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class LogitTransform:
    """logits = softcap(scale·x), softcap(y) = cap·tanh(y/cap); ``cap`` 0 means no cap."""

    scale: float = 1.0
    cap: float = 0.0

    @classmethod
    def build(cls, side: str, scale: object, softcap: object) -> LogitTransform:
        _check_real(f"{side}_logit_scale", scale)
        if not scale > 0.0:  # type: ignore[operator]
            raise ValueError(f"{side}_logit_scale must be > 0, got {scale}")
        if softcap is None:
            return cls(float(scale), 0.0)  # type: ignore[arg-type]
        _check_real(f"{side}_softcap", softcap)
        if not softcap > 0.0:  # type: ignore[operator]
            raise ValueError(f"{side}_softcap must be > 0 (None for no cap), got {softcap}")
        return cls(float(scale), float(softcap))  # type: ignore[arg-type]

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.cap == 0.0


@dataclass(frozen=True)
class FusedLinearOptions:
    """Everything but the tensors. ``loss`` carries divergence, parameter, temperature, reduction,
    ignore_index and hard_label_weight (``soft_cross_entropy`` for taid and the top-k teacher)."""

    loss: DivergenceOptions
    source: str
    taid: bool = False
    renormalize: bool = True
    student: LogitTransform = LogitTransform()
    teacher: LogitTransform = LogitTransform()
    chunk_size: int | None = None
    grad_weight_dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        if self.chunk_size is not None:
            if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int):
                raise TypeError(f"chunk_size must be an int or None, got {type(self.chunk_size).__name__}")
            if self.chunk_size < 1:
                raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.grad_weight_dtype not in GRAD_WEIGHT_DTYPES:
            raise TypeError(
                f"grad_weight_dtype must be one of {GRAD_WEIGHT_DTYPES}, got {self.grad_weight_dtype}"
            )
        if not isinstance(self.renormalize, bool):
            raise TypeError(f"renormalize must be a bool, got {type(self.renormalize).__name__}")
        if self.source in ("topk", "none") and not self.teacher.identity:
            what = "a top-k cache" if self.source == "topk" else "no teacher (hard_label_weight=1)"
            raise ValueError(f"teacher_logit_scale / teacher_softcap apply to teacher logits, not to {what}")
        weight = self.loss.hard_label_weight
        if self.source == "none" and weight != 1.0:
            raise ValueError(f"no teacher source means pure cross-entropy, hard_label_weight=1; got {weight}")
        if (self.taid or self.source == "topk") and weight > 0.0:
            raise ValueError(
                "hard_label_weight is supported with the divergences, not with taid or a top-k teacher"
            )


@dataclass(frozen=True)
class FusedLinearInputs:
    """Flattened tensors: student hidden [N, H_s], weight [V, H_s], bias [V] or None; the teacher's
    hidden [N, H_t] / weight [V, H_t] / bias, or logits [N, V], or top-k indices int64 [N, k], log-probs
    [N, k] and log rest mass [N]; valid bool [N], labels int64 [N] or None, the leading shape, the
    mean's divisor."""

    hidden: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    teacher_hidden: torch.Tensor | None
    teacher_weight: torch.Tensor | None
    teacher_bias: torch.Tensor | None
    teacher_logits: torch.Tensor | None
    topk_indices: torch.Tensor | None
    topk_logprobs: torch.Tensor | None
    rest: torch.Tensor | None
    valid: torch.Tensor
    labels: torch.Tensor | None
    leading_shape: torch.Size
    divisor: torch.Tensor


def teacher_source(
    hidden: object,
    weight: object,
    logits: object,
    indices: object,
    logprobs: object,
    hard_label_weight: object = 0.0,
) -> str:
    """The one teacher source given: "hidden", "logits" or "topk"; "none" when none is given and
    ``hard_label_weight`` is 1 (the loss is then only the hard-label CE); else none or several is a
    ValueError."""
    given = {
        "hidden": hidden is not None or weight is not None,
        "logits": logits is not None,
        "topk": indices is not None or logprobs is not None,
    }
    names = [name for name, there in given.items() if there]
    if not names and hard_label_weight == 1.0:
        return "none"
    if len(names) != 1:
        raise ValueError(
            "give exactly one teacher source: teacher_hidden with teacher_weight, teacher_logits, or "
            f"teacher_topk_indices with teacher_topk_logprobs; got {names or 'none'} (no teacher only "
            f"for the pure cross-entropy, hard_label_weight=1; got {hard_label_weight})"
        )
    return names[0]


def _tensor(name: str, x: object, device: torch.device | None = None, floating: bool = True) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if floating and x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a floating tensor (float32, bfloat16, float16 or float64), got {x.dtype}"
        )
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device} but student_hidden is on {device}")
    return x


def _projection(
    side: str, hidden: object, weight: object, bias: object, device: torch.device | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Check (hidden [..., H], weight [V, H], bias [V] or None) of one model."""
    h = _tensor(f"{side}_hidden", hidden, device)
    if h.dim() < 1 or h.shape[-1] < 1:
        raise ValueError(f"{side}_hidden must have shape [..., H] with H >= 1, got {tuple(h.shape)}")
    w = _tensor(f"{side}_weight", weight, h.device)
    if w.dim() != 2 or w.shape[1] != h.shape[-1] or w.shape[0] < 1:
        raise ValueError(
            f"{side}_weight must be [V, H] with the hidden size H = {h.shape[-1]} of {side}_hidden "
            f"{tuple(h.shape)}, got {tuple(w.shape)}"
        )
    if bias is not None:
        bias = _tensor(f"{side}_bias", bias, h.device)
        if bias.shape != (w.shape[0],):
            raise ValueError(f"{side}_bias must be [V] = [{w.shape[0]}], got {tuple(bias.shape)}")
    return h, w, bias


def _check_vocab(student_vocab: int, teacher_vocab: int) -> None:
    if student_vocab != teacher_vocab:
        raise ValueError(vocabulary_mismatch(student_vocab, teacher_vocab))


def _check_leading(name: str, shape: torch.Size, leading: torch.Size) -> None:
    if shape != leading:
        raise ValueError(
            f"{name} must have student_hidden's leading shape {tuple(leading)}, got {tuple(shape)}"
        )


def _teacher_tensors(
    source: str, tensors: dict, leading: torch.Size, vocab: int, device: torch.device
) -> dict:
    """The teacher's flattened tensors of ``source`` (detached), keyed as in :class:`FusedLinearInputs`."""
    out = dict.fromkeys(("teacher_hidden", "teacher_weight", "teacher_bias", "teacher_logits"))
    out.update(topk_indices=None, topk_logprobs=None)
    if source == "hidden":
        if tensors["teacher_hidden"] is None or tensors["teacher_weight"] is None:
            raise ValueError("a hidden-state teacher needs both teacher_hidden and teacher_weight")
        h, w, b = _projection(
            "teacher", tensors["teacher_hidden"], tensors["teacher_weight"], tensors["teacher_bias"], device
        )
        _check_leading("teacher_hidden", h.shape[:-1], leading)
        _check_vocab(vocab, w.shape[0])
        out.update(teacher_hidden=h.detach().reshape(-1, h.shape[-1]), teacher_weight=w.detach())
        out.update(teacher_bias=None if b is None else b.detach())
    elif source == "logits":
        u = _tensor("teacher_logits", tensors["teacher_logits"], device)
        _check_leading("teacher_logits", u.shape[:-1], leading)
        _check_vocab(vocab, u.shape[-1])
        out["teacher_logits"] = u.detach().reshape(-1, vocab)
    elif source == "topk":
        like = torch.empty((), device=device).expand(*leading, vocab)  # shape and device only, no memory
        indices, logprobs = _check_teacher(
            tensors["teacher_topk_indices"], tensors["teacher_topk_logprobs"], like
        )
        k = indices.shape[-1]
        out.update(
            topk_indices=indices.reshape(-1, k).to(torch.int64),
            topk_logprobs=logprobs.detach().reshape(-1, k),
        )
    return out


def prepare_fused_linear(
    student: tuple[object, object, object],
    teacher: dict[str, object],
    options: FusedLinearOptions,
    labels: object = None,
    mask: object = None,
    num_items_in_batch: object = None,
) -> FusedLinearInputs:
    """Validate and flatten a fused-linear call. ``student`` is (hidden, weight, bias); ``teacher``
    holds teacher_hidden, teacher_weight, teacher_bias, teacher_logits, teacher_topk_indices and
    teacher_topk_logprobs (None where not given)."""
    h, w, b = _projection("student", *student, None)
    leading, vocab = h.shape[:-1], w.shape[0]
    flat_teacher = _teacher_tensors(options.source, teacher, leading, vocab, h.device)
    valid, flat_labels = valid_tokens(leading, h.device, labels, mask, options.loss.ignore_index)
    if options.loss.needs_labels:
        if flat_labels is None:
            raise ValueError(
                f"hard_label_weight={options.loss.hard_label_weight} needs labels, got labels=None"
            )
        check_label_range(flat_labels, valid, vocab)
    rest = None
    if options.source == "topk":
        _check_values(flat_teacher["topk_indices"], flat_teacher["topk_logprobs"], valid, vocab)
        rest = rest_log_mass(flat_teacher["topk_logprobs"], options.renormalize, vocab)
    return FusedLinearInputs(
        hidden=h.reshape(-1, h.shape[-1]),
        weight=w,
        bias=b,
        **flat_teacher,
        rest=rest,
        valid=valid,
        labels=flat_labels,
        leading_shape=leading,
        divisor=_divisor(valid, options.loss.reduction, num_items_in_batch),
    )


def auto_chunk_size(rows: int, vocab: int, buffers: float, budget_bytes: int = 512 << 20) -> int:
    """Tokens per chunk such that ``buffers`` fp32 [chunk, V] buffers take at most ``budget_bytes``."""
    per_row = max(1, math.ceil(buffers * 4 * vocab))
    return max(1, min(rows, budget_bytes // per_row))
