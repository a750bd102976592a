"""How a causal LM turns its last hidden states into logits: z = softcap(s·(h Wᵀ + b)), with the
scale s and the cap read from the (text) config as TRL 1.16's DistillationTrainer reads them."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class HeadTransform:
    """The logit scale s (default 1) and softcap c (None: no cap) of one model."""

    scale: float = 1.0
    softcap: float | None = None


def head_transform(config: object) -> HeadTransform:
    """Scale and softcap of a model config; VLMs keep them on ``get_text_config()``.

    The scale is the first of ``logit_scale`` (Cohere), ``output_multiplier``, ``lm_head_multiplier``
    (Falcon-H1) that is set, else 1/``logits_scaling`` (Granite, MiniCPM3; HyperCLOVA X multiplies by
    it); the cap is ``final_logit_softcapping`` (Gemma-2/3).
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    scale = None
    for name in ("logit_scale", "output_multiplier", "lm_head_multiplier"):
        scale = getattr(text, name, None)
        if scale is not None:
            break
    scaling = getattr(text, "logits_scaling", None)
    if scale is None and scaling is not None:
        scale = scaling if getattr(text, "model_type", None) == "hyperclovax" else 1.0 / scaling
    return HeadTransform(
        1.0 if scale is None else float(scale), getattr(text, "final_logit_softcapping", None)
    )


def head_logits(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, transform: HeadTransform
) -> torch.Tensor:
    """softcap(s·(h Wᵀ + b)) for hidden states [..., H], a head weight [V, H] and bias [V] or None."""
    logits = torch.nn.functional.linear(hidden, weight, bias)
    if transform.scale != 1.0:
        logits = logits * transform.scale
    if transform.softcap:
        logits = transform.softcap * torch.tanh(logits / transform.softcap)
    return logits
