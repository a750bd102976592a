"""The loss a fastkd TRL trainer computes, from its config: which divergence, top-k teacher, hard-label
weight and backend. Needs no TRL import.

Config fields (:class:`FastKDFields`, mixed into the trainers' configs):

- ``fastkd_divergence``: ``None`` (default) keeps TRL's semantics, the generalised JSD at the config's
  ``beta``; otherwise any fastkd divergence, optionally with its parameter after a colon:
  ``"forward_kl"``, ``"skew_kl:0.2"``, ``"jsd:0.3"``, ``"akl:0.6"`` (β / α / μ, defaults from the spec).
- ``fastkd_teacher_topk``: distil from the teacher's k most probable tokens only (``sparse_kl``,
  forward KL on the renormalised top-k); needs a forward-KL objective (``fastkd_divergence="forward_kl"``
  or ``beta=0``).
- ``fastkd_hard_label_weight`` w: (1 − w)·divergence + w·CE(student, next token), CE at T = 1.
- ``fastkd_backend``: ``"auto"``, ``"triton"``, ``"cuda"``, ``"cpu"`` or ``"torch"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from fastkd.backends import BACKENDS
from fastkd.boundary.options import FAMILY_PARAMETER, _check_unit
from fastkd.functional.divergence import divergence_options, kd_loss
from fastkd.functional.sparse import sparse_kl, teacher_topk

IGNORE_INDEX = -100


@dataclass
class FastKDFields:
    """The extra config fields of fastkd's TRL trainers (see the module docstring)."""

    fastkd_divergence: str | None = field(
        default=None,
        metadata={"help": "fastkd divergence, 'name' or 'name:param' (default: TRL's JSD at beta)."},
    )
    fastkd_teacher_topk: int | None = field(
        default=None, metadata={"help": "Distil from the teacher's top-k tokens only (forward KL)."}
    )
    fastkd_hard_label_weight: float = field(
        default=0.0, metadata={"help": "Weight w of the hard-label CE: (1 - w) * KD + w * CE."}
    )
    fastkd_backend: str = field(
        default="auto", metadata={"help": f"fastkd backend, one of {list(BACKENDS)}."}
    )


@dataclass(frozen=True)
class LossSpec:
    """The checked loss of a trainer: divergence and its parameter, top-k, CE weight, backend, T."""

    divergence: str
    params: tuple[tuple[str, float], ...]
    teacher_topk: int | None
    hard_label_weight: float
    backend: str
    temperature: float

    def kd_kwargs(self) -> dict[str, object]:
        """The keyword options of ``kd_loss`` / ``fused_linear_kd`` for this loss."""
        return {
            "temperature": self.temperature,
            "backend": self.backend,
            "hard_label_weight": self.hard_label_weight,
            **dict(self.params),
        }

    def logit_loss(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        labels: torch.Tensor,
        mask: torch.Tensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean over valid tokens (``labels`` ≠ −100 and ``mask``), or Σ / ``num_items_in_batch``."""
        if self.teacher_topk is None:
            return kd_loss(
                student_logits,
                teacher_logits,
                self.divergence,
                labels=labels,
                mask=mask,
                num_items_in_batch=num_items_in_batch,
                **self.kd_kwargs(),
            )
        indices, logprobs = teacher_topk(teacher_logits, self.teacher_topk)
        return self.sparse_loss(student_logits, indices, logprobs, labels, mask, num_items_in_batch)

    def sparse_loss(
        self,
        student_logits: torch.Tensor,
        topk_indices: torch.Tensor,
        topk_logprobs: torch.Tensor,
        labels: torch.Tensor,
        mask: torch.Tensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Forward KL from a top-k teacher (live or cached), plus the hard-label CE when w > 0."""
        options = {"labels": labels, "mask": mask, "num_items_in_batch": num_items_in_batch}
        soft = sparse_kl(
            student_logits,
            topk_indices,
            topk_logprobs,
            temperature=self.temperature,
            backend=self.backend,
            **options,
        )
        w = self.hard_label_weight
        return soft if w == 0.0 else (1.0 - w) * soft + w * _hard_label_ce(student_logits, **options)


def _hard_label_ce(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None,
    num_items_in_batch: int | torch.Tensor | None,
) -> torch.Tensor:
    """CE(z, labels) at T = 1, summed over valid tokens and divided like the KD term."""
    targets = labels if mask is None else labels.masked_fill(~mask, IGNORE_INDEX)
    flat = student_logits.reshape(-1, student_logits.shape[-1]).float()
    total = F.cross_entropy(flat, targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    if num_items_in_batch is None:
        return total / (targets != IGNORE_INDEX).sum().clamp_min(1)
    return total / torch.as_tensor(num_items_in_batch, device=total.device).clamp_min(1)


def parse_divergence(value: str | None, beta: float) -> tuple[str, tuple[tuple[str, float], ...]]:
    """(divergence, its parameter as ((name, value),)) from ``fastkd_divergence`` and TRL's ``beta``."""
    if value is None:
        name, params = "jsd", (("beta", float(beta)),)
    else:
        name, _, raw = value.partition(":")
        expected = FAMILY_PARAMETER.get(name, (None, None))[0]
        if raw and expected is None:
            raise ValueError(f"fastkd_divergence={value!r}: {name!r} takes no parameter")
        try:
            params = ((expected, float(raw)),) if raw else ()
        except ValueError:
            raise ValueError(f"fastkd_divergence={value!r}: parameter {raw!r} is not a number") from None
    divergence_options(name, **dict(params))  # unknown names and out-of-range parameters raise here
    return name, params


def loss_spec(args: object, temperature: float) -> LossSpec:
    """The checked :class:`LossSpec` of a TRL config (its ``beta``) and its :class:`FastKDFields`; a plain
    TRL config gets the fields' defaults (TRL's JSD on fastkd kernels)."""
    fields = {name: getattr(args, name, value) for name, value in vars(FastKDFields()).items()}
    args = SimpleNamespace(beta=args.beta, **fields)
    divergence, params = parse_divergence(args.fastkd_divergence, args.beta)
    k = args.fastkd_teacher_topk
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"fastkd_teacher_topk must be a positive int, got {k!r}")
        forward = divergence == "forward_kl" or (divergence == "jsd" and dict(params)["beta"] == 0.0)
        if not forward:
            raise ValueError(
                f"fastkd_teacher_topk={k} distils with forward KL (sparse_kl); set "
                f"fastkd_divergence='forward_kl' (or beta=0.0), got fastkd_divergence="
                f"{args.fastkd_divergence!r} and beta={args.beta}"
            )
    _check_unit("fastkd_hard_label_weight", args.fastkd_hard_label_weight)
    if args.fastkd_backend not in BACKENDS:
        raise ValueError(f"fastkd_backend must be one of {list(BACKENDS)}, got {args.fastkd_backend!r}")
    return LossSpec(
        divergence, params, k, float(args.fastkd_hard_label_weight), args.fastkd_backend, temperature
    )
