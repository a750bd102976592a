"""Fused-linear KD: distillation losses from hidden states and LM-head weights, never [N, V] logits.

Per model the logits are z = softcap(s·(h Wᵀ + b)), softcap(x) = c·tanh(x/c) when a cap is given;
then temperature, and exactly the logit-level loss of ``shared/spec/losses.md`` on them.
"""

from __future__ import annotations

import torch

from fastkd.backends import resolve
from fastkd.boundary.fused_linear import (
    FusedLinearOptions,
    LogitTransform,
    prepare_fused_linear,
    teacher_source,
)
from fastkd.boundary.options import DivergenceOptions
from fastkd.functional.divergence import divergence_options
from fastkd.functional.taid import interpolation_weight
from fastkd.functions.fused_linear import FusedLinearFunction
from fastkd.reference.fused_linear import fused_linear_loss


def _core_options(divergence: str, source: str, t: object, settings: dict) -> tuple[DivergenceOptions, bool]:
    """The logit-level options and whether this is TAID; taid needs ``t``, a top-k teacher forward KL."""
    if divergence == "taid" or t is not None:
        if divergence != "taid" or t is None:
            raise ValueError(
                f"t is the interpolation weight of divergence='taid'; got divergence={divergence!r}, t={t!r}"
            )
        if source == "topk":
            raise ValueError("taid needs full teacher logits (hidden states or logits), not a top-k cache")
        if any(settings[name] is not None for name in ("beta", "alpha", "mu")):
            raise TypeError("divergence 'taid' takes no beta, alpha or mu")
    if divergence == "taid" or source == "topk":
        if source == "topk" and divergence != "forward_kl":
            raise ValueError(
                f"a top-k teacher gives the sparse forward KL (sparse_kl); got divergence={divergence!r}"
            )
        rest = {k: v for k, v in settings.items() if k not in ("beta", "alpha", "mu")}
        return divergence_options("soft_cross_entropy", **rest), divergence == "taid"
    return divergence_options(divergence, **settings), False


def _gemm_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The autocast dtype where autocast is on for the hidden states' device, else their dtype."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return hidden.dtype


def fused_linear_kd(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor | None = None,
    teacher_weight: torch.Tensor | None = None,
    *,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    teacher_logits: torch.Tensor | None = None,
    teacher_topk_indices: torch.Tensor | None = None,
    teacher_topk_logprobs: torch.Tensor | None = None,
    renormalize: bool = True,
    divergence: str = "forward_kl",
    beta: float | None = None,
    alpha: float | None = None,
    mu: float | None = None,
    t: float | torch.Tensor | None = None,
    student_logit_scale: float = 1.0,
    teacher_logit_scale: float = 1.0,
    student_softcap: float | None = None,
    teacher_softcap: float | None = None,
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    ignore_index: int = -100,
    temperature: float = 1.0,
    reduction: str = "mean",
    num_items_in_batch: int | torch.Tensor | None = None,
    hard_label_weight: float = 0.0,
    chunk_size: int | None = None,
    grad_weight_dtype: torch.dtype = torch.float32,
    backend: str = "auto",
) -> torch.Tensor:
    """KD loss between student logits softcap(s·(h Wᵀ + b)) and a teacher, without forming the logits.

    - ``student_hidden`` [..., H_s], ``student_weight`` [V, H_s] (the lm_head / output-embedding
      weight, tied or not), ``student_bias`` [V]: they get the gradients.
    - The teacher, exactly one of: ``teacher_hidden`` [..., H_t] with ``teacher_weight`` [V, H_t]
      (and ``teacher_bias``); ``teacher_logits`` [..., V]; ``teacher_topk_indices`` /
      ``teacher_topk_logprobs`` [..., k] (the cache of :func:`fastkd.losses.teacher_topk`, the loss is
      then :func:`fastkd.losses.sparse_kl` with ``renormalize``). The teacher gets no gradient.
      With ``hard_label_weight=1`` the teacher may be left out: the loss is then the fused-linear
      cross-entropy −log softmax(z)[label] alone (the student's GEMMs only; ``divergence`` unused).
    - ``divergence``: forward_kl (default), soft_cross_entropy, reverse_kl, jsd (``beta``), skew_kl /
      skew_reverse_kl (``alpha``), tvd, akl (``mu``), or "taid" with its interpolation weight ``t``.
    - Logit transforms per model, before the temperature: ``*_logit_scale`` s (multiply; Cohere's
      ``logit_scale``, Granite's 1/``logits_scaling``), then ``*_softcap`` c (c·tanh(x/c); Gemma-2's
      ``final_logit_softcapping``; None for none). The teacher's also apply to ``teacher_logits``.
    - labels / mask / ignore_index, temperature, reduction, num_items_in_batch, hard_label_weight:
      as in :func:`fastkd.losses.kd_loss` (the hard-label CE is fused into the same chunk pass).
    - ``chunk_size``: tokens per chunk; None: all [chunk, V] fp32 buffers within 512 MiB.
    - ``grad_weight_dtype``: the weight gradient's accumulator (fp32 default).
    - ``backend``: "auto", "triton" (CUDA), "cpu" (C++ row kernels) or "torch" (materialise and
      autograd: memory-hungry reference). Under ``torch.autocast`` the GEMMs run in its dtype.

    Only valid tokens are projected. Returns the fp32 loss ([...] for ``reduction="none"``).
    """
    source = teacher_source(
        teacher_hidden,
        teacher_weight,
        teacher_logits,
        teacher_topk_indices,
        teacher_topk_logprobs,
        hard_label_weight,
    )
    settings = dict(
        beta=beta,
        alpha=alpha,
        mu=mu,
        temperature=temperature,
        reduction=reduction,
        ignore_index=ignore_index,
        hard_label_weight=hard_label_weight,
    )
    core, is_taid = _core_options(divergence, source, t, settings)
    options = FusedLinearOptions(
        loss=core,
        source=source,
        taid=is_taid,
        renormalize=renormalize,
        student=LogitTransform.build("student", student_logit_scale, student_softcap),
        teacher=LogitTransform.build("teacher", teacher_logit_scale, teacher_softcap),
        chunk_size=chunk_size,
        grad_weight_dtype=grad_weight_dtype,
    )
    teacher = dict(
        teacher_hidden=teacher_hidden,
        teacher_weight=teacher_weight,
        teacher_bias=teacher_bias,
        teacher_logits=teacher_logits,
        teacher_topk_indices=teacher_topk_indices,
        teacher_topk_logprobs=teacher_topk_logprobs,
    )
    flat = prepare_fused_linear(
        (student_hidden, student_weight, student_bias), teacher, options, labels, mask, num_items_in_batch
    )
    weight = interpolation_weight(t, flat.hidden) if is_taid else None
    fused = ("triton",) if is_taid or source == "topk" else ("triton", "cpu")
    name = resolve(backend, flat.hidden, fused=fused)
    if name == "torch":
        return fused_linear_loss(flat, options, weight)
    return FusedLinearFunction.apply(
        flat.hidden, flat.weight, flat.bias, flat, options, weight, name, _gemm_dtype(flat.hidden)
    )
