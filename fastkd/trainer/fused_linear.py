"""The trainer's fused-linear path for causal LMs: last hidden states + LM-head weights, never ``.logits``.

Each model runs its decoder without the LM head (``model.get_decoder()``), and the loss is
:func:`fastkd.losses.fused_linear_kd` on the shifted hidden states and ``get_output_embeddings()``
(weight and bias; tied embeddings are the same parameter). The logit transforms come from the config:
``final_logit_softcapping`` (Gemma-2/3), ``logit_scale`` (Cohere), 1/``logits_scaling`` (Granite).
Under DDP and FSDP2 the loss runs as a forward of the wrapped student
(:func:`fastkd.trainer.distributed.run_in_forward`): DDP then all-reduces its gradients, FSDP gathers
the head weight first; the teacher is not wrapped.
"""

from __future__ import annotations

from typing import Any

import torch

from fastkd import losses as L
from fastkd.boundary.options import DIVERGENCES
from fastkd.trainer.distributed import run_in_forward
from fastkd.trainer.fsdp import check_gathered


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
    decoder = model.get_decoder()
    out = decoder(**inputs)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def _check(trainer: Any) -> str:
    """The divergence of the run; what the fused path cannot do is a ValueError."""
    args = trainer.args
    if trainer.task != "causal_lm":
        raise ValueError(f"fused_linear is for task='causal_lm', got {trainer.task!r}")
    if trainer.sinkhorn_fn is not None:
        raise ValueError("fused_linear does not form logits, so it cannot add the Sinkhorn term")
    if args.loss_name not in (*DIVERGENCES, "sparse_kl"):
        raise ValueError(f"fused_linear supports the divergences and sparse_kl, got loss {args.loss_name!r}")
    if args.scale_by_temperature_squared and args.hard_label_weight > 0:
        raise ValueError("fused_linear fuses (1-w)·KD + w·CE, so it cannot also scale the KD term by T²")
    return "forward_kl" if args.loss_name == "sparse_kl" else args.loss_name


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


def _loss(
    trainer: Any, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any
) -> torch.Tensor:
    """``(1-w)·KD + w·CE`` of one micro-batch (see :func:`fused_linear_loss`)."""
    args = trainer.args
    divergence = _check(trainer)
    inputs = dict(inputs)
    labels = inputs.pop("labels", None)
    if labels is None:
        raise ValueError("causal-LM distillation needs 'labels' (-100 on positions to skip)")
    topk = (inputs.pop("teacher_topk_indices", None), inputs.pop("teacher_topk_logprobs", None))
    hidden = last_hidden(model, inputs)[:, :-1]
    head = lm_head(model)
    return L.fused_linear_kd(
        hidden,
        head["weight"],
        student_bias=head["bias"],
        student_logit_scale=head["scale"],
        student_softcap=head["cap"],
        **_teacher(trainer, inputs, topk, hidden.device),
        divergence=divergence,
        labels=labels[:, 1:],
        temperature=args.temperature,
        num_items_in_batch=num_items_in_batch,
        hard_label_weight=args.hard_label_weight,
        backend=args.kd_backend,
        **args.loss_options,
    )


def fused_linear_loss(
    trainer: Any, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any
) -> torch.Tensor:
    """The trainer's loss ``(1-w)·s·KD + w·CE`` through :func:`fastkd.losses.fused_linear_kd`; under
    DDP / FSDP2 it is computed in a forward of the wrapped student."""
    args = trainer.args
    loss = run_in_forward(model, lambda student: _loss(trainer, student, inputs, num_items_in_batch))
    if args.scale_by_temperature_squared:
        loss = loss * args.temperature**2
    if model.training:
        trainer._sums["kd"] = trainer._sums.get("kd", 0.0) + loss.detach().float()
    return loss
