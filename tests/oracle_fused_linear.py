"""fp64 oracle of fused-linear KD: materialise the logits in float64, then the spec's formulas.

Independent of the library (imports nothing from ``fastkd``): logits = softcap(s·(h Wᵀ + b)) with
softcap(x) = c·tanh(x/c) (``shared/spec/losses.md``, "Fused-linear KD"), then the fp64 oracles of
the divergences, TAID and the sparse teacher. Gradients come from float64 autograd.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tests.oracle import oracle_kd_loss
from tests.oracle_sparse import oracle_sparse_kl
from tests.oracle_taid import oracle_taid


def oracle_logits(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, scale: float, cap: float | None
) -> Tensor:
    """softcap(s·(h Wᵀ + b)) in float64; [..., V]."""
    x = hidden.to(torch.float64) @ weight.to(torch.float64).t()
    if bias is not None:
        x = x + bias.to(torch.float64)
    x = scale * x
    return cap * torch.tanh(x / cap) if cap else x


def oracle_fused_linear(
    student: tuple[Tensor, Tensor, Tensor | None],
    teacher: dict,
    divergence: str = "forward_kl",
    *,
    param: float | None = None,
    t: float | None = None,
    renormalize: bool = True,
    student_logit_scale: float = 1.0,
    teacher_logit_scale: float = 1.0,
    student_softcap: float | None = None,
    teacher_softcap: float | None = None,
    **options: object,
) -> Tensor:
    """fp64 loss of fused-linear KD; ``teacher`` holds ("hidden", h, W, b), ("logits", u),
    ("topk", indices, logprobs) or ("none",) (no teacher: hard_label_weight = 1, the hard-label CE
    alone) under the key "source"; gradients flow to the student's tensors."""
    z = oracle_logits(*student, student_logit_scale, student_softcap)
    kind, *tensors = teacher["source"]
    if kind == "none":  # at hard_label_weight = 1 the oracle reads the teacher only for its shape
        return oracle_kd_loss(z, torch.zeros_like(z), divergence, param=param, **options)
    if kind == "topk":
        return oracle_sparse_kl(z, tensors[0], tensors[1], renormalize=renormalize, **options)
    if kind == "hidden":
        u = oracle_logits(*tensors, teacher_logit_scale, teacher_softcap)
    else:
        u = teacher_logit_scale * tensors[0].to(torch.float64)
        u = teacher_softcap * torch.tanh(u / teacher_softcap) if teacher_softcap else u
    if divergence == "taid":
        return oracle_taid(z, u.detach(), t, **options)
    return oracle_kd_loss(z, u.detach(), divergence, param=param, **options)
