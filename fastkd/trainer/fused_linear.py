"""The trainer's fused-linear path for causal LMs: last hidden states + LM-head weights, never ``.logits``.

Each model runs its decoder without the LM head (``model.get_decoder()``), and the loss is
:func:`fastkd.losses.fused_linear_kd` on the shifted hidden states and ``get_output_embeddings()``
(weight and bias; tied embeddings are the same parameter). The logit transforms come from the config:
``final_logit_softcapping`` (Gemma-2/3), ``logit_scale`` (Cohere), 1/``logits_scaling`` (Granite).
Under DDP the student's whole loss runs as the wrapper's forward (:func:`run_as_forward`), so that the
gradients are all-reduced as for an ordinary forward; under FSDP2 as a forward of the sharded root, so
that FSDP gathers the LM-head weight first (:func:`fastkd.trainer.fsdp.as_fsdp_forward`). The teacher
is not wrapped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from fastkd import losses as L
from fastkd.boundary.options import DIVERGENCES
from fastkd.trainer.fsdp import as_fsdp_forward, check_gathered, is_fsdp


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The causal LM inside DDP / DataParallel wrappers (their ``.module``)."""
    while isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module
    return model


def lm_head(model: torch.nn.Module) -> dict[str, Any]:
    """(weight, bias, logit scale, softcap) of a causal LM, as keyword arguments of one side."""
    head = model.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise ValueError(f"{type(model).__name__} has no output embedding (LM head) for fused_linear")
    check_gathered(head.weight, f"the LM-head weight of {type(model).__name__}")
    config = model.config
    scale = getattr(config, "logit_scale", None)
    if scale is None and getattr(config, "logits_scaling", None):
        scale = 1.0 / config.logits_scaling
    cap = getattr(config, "final_logit_softcapping", None)
    return {
        "weight": head.weight,
        "bias": getattr(head, "bias", None),
        "scale": float(scale or 1.0),
        "cap": cap or None,
    }


def last_hidden(model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    """The decoder's last hidden states [B, L, H], without the LM head."""
    out = model.get_decoder()(**inputs)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def run_as_forward(model: torch.nn.Module, fn: Callable[[torch.nn.Module], Any]) -> Any:
    """``fn(inner)`` on the causal LM inside ``model``; through a wrapper (DDP) as the wrapper's own
    forward, redirected for this call. DDP prepares its gradient all-reduce in its forward and, with
    ``find_unused_parameters`` (HF's default), marks every parameter the forward's outputs do not
    reach as ready at its end: the decoder and the LM head must both be used inside it. FSDP2: as a
    forward of the sharded root (:func:`fastkd.trainer.fsdp.as_fsdp_forward`)."""
    if is_fsdp(model):
        return as_fsdp_forward(model, fn)
    inner = unwrap(model)
    if inner is model:
        return fn(inner)
    own = inner.__dict__.get("forward")  # an instance-level forward (e.g. accelerate's) to restore
    inner.forward = lambda: fn(inner)
    try:
        return model()
    finally:
        if own is None:
            del inner.forward
        else:
            inner.forward = own


def _check(trainer: Any) -> str:
    """The divergence of the run; what the fused path cannot do is a ValueError."""
    args = trainer.args
    if trainer.task != "causal_lm":
        raise ValueError(f"fused_linear is for task='causal_lm', got {trainer.task!r}")
    if trainer.sinkhorn_fn is not None:
        raise ValueError("fused_linear does not form logits, so it cannot add the Sinkhorn term")
    if args.loss_name not in (*DIVERGENCES, "sparse_kl", "taid"):
        raise ValueError(
            f"fused_linear supports the divergences, taid and sparse_kl, got loss {args.loss_name!r}"
        )
    return "forward_kl" if args.loss_name == "sparse_kl" else args.loss_name


def _kd_options(trainer: Any, divergence: str, device: torch.device) -> dict[str, Any]:
    """The KD term's own options: TAID's t from the trainer's one schedule (its ``loss_options``
    configure that schedule), else ``loss_options`` (family parameter, ``renormalize``)."""
    if divergence == "taid":
        return {"t": trainer.loss_fn.t_on(device)}
    return dict(trainer.args.loss_options)


def _teacher(trainer: Any, inputs: dict[str, Any], topk: tuple, device: torch.device) -> dict[str, Any]:
    if trainer.teacher_signal == "topk":
        if topk[0] is None:
            raise ValueError(f"loss {trainer.args.loss_name!r} needs teacher_topk_* columns in the batch")
        return {"teacher_topk_indices": topk[0][:, :-1], "teacher_topk_logprobs": topk[1][:, :-1]}
    teacher = trainer.teacher
    if next(teacher.parameters()).device != device:
        teacher.to(device)
    teacher.eval()
    with torch.no_grad():
        hidden = last_hidden(teacher, inputs)[:, :-1]
    head = lm_head(teacher)
    return {
        "teacher_hidden": hidden,
        "teacher_weight": head["weight"],
        "teacher_bias": head["bias"],
        "teacher_logit_scale": head["scale"],
        "teacher_softcap": head["cap"],
    }


def _parts(
    trainer: Any, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any
) -> dict[str, torch.Tensor]:
    """The loss terms of one micro-batch: "kd" (s·KD) and / or "ce", or "kd_ce" ((1-w)·KD + w·CE in
    one fused call); see :func:`fused_linear_loss`."""
    args = trainer.args
    divergence = _check(trainer)
    inputs = dict(inputs)
    labels = inputs.pop("labels", None)
    if labels is None:
        raise ValueError("causal-LM distillation needs 'labels' (-100 on positions to skip)")
    topk = (inputs.pop("teacher_topk_indices", None), inputs.pop("teacher_topk_logprobs", None))
    hidden = last_hidden(model, inputs)[:, :-1]
    head = lm_head(model)
    common = dict(
        student_bias=head["bias"],
        student_logit_scale=head["scale"],
        student_softcap=head["cap"],
        labels=labels[:, 1:],
        num_items_in_batch=num_items_in_batch,
        backend=args.kd_backend,
    )
    w = args.hard_label_weight
    split = divergence == "taid" or trainer.teacher_signal == "topk" or args.scale_by_temperature_squared
    parts: dict[str, torch.Tensor] = {}
    if trainer.uses_kd:
        kd = L.fused_linear_kd(
            hidden,
            head["weight"],
            **_teacher(trainer, inputs, topk, hidden.device),
            divergence=divergence,
            temperature=args.temperature,
            hard_label_weight=0.0 if split else w,
            **_kd_options(trainer, divergence, hidden.device),
            **common,
        )
        if divergence == "taid":
            trainer.loss_fn.record(kd)
        if args.scale_by_temperature_squared:
            kd = kd * args.temperature**2
        parts["kd" if split or w == 0.0 else "kd_ce"] = kd
    if w > 0.0 and (split or not trainer.uses_kd):
        parts["ce"] = L.fused_linear_kd(hidden, head["weight"], hard_label_weight=1.0, **common)
    return parts


def fused_linear_loss(
    trainer: Any, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any, ranks: Any = 1
) -> torch.Tensor:
    """The trainer's loss ``ranks·((1-w)·s·KD + w·CE)`` through :func:`fastkd.losses.fused_linear_kd`.

    A divergence with ``s = 1`` is one call, the CE fused into its chunk pass. TAID, a top-k teacher and
    ``s = T²`` need the KD term alone (TAID's schedule reads it as J; the scale is the KD term's), so
    the CE comes from a second, teacher-free call (the student's GEMMs once more). With ``w = 1`` only
    that call runs and no teacher is needed. The parts are logged as in the unfused trainer ("kd_ce"
    for the fused pair).
    """
    parts = run_as_forward(model, lambda inner: _parts(trainer, inner, inputs, num_items_in_batch))
    w = trainer.args.hard_label_weight
    loss = parts["kd_ce"] if "kd_ce" in parts else (1 - w) * parts.get("kd", 0.0) + w * parts.get("ce", 0.0)
    if model.training:
        for key, value in parts.items():  # under DDP: this rank's part, times W (its own mean)
            trainer._sums[key] = trainer._sums.get(key, 0.0) + value.detach().float() * ranks
    return loss * ranks
