"""One registry of the distillation losses the trainer can use, by name.

Each entry is a factory ``factory(**options) -> loss`` where ``loss(student_logits, teacher, *, mask,
temperature, num_items_in_batch, backend) -> scalar`` and ``teacher`` is the teacher's logits
(``teacher="logits"`` entries) or a ``(topk_indices, topk_logprobs)`` pair (``teacher="topk"``). A loss
object may also define ``state_dict`` / ``load_state_dict`` (saved in checkpoints), ``step(global_step)``
(called before each optimizer step) and ``logs() -> dict[str, float]`` (extra logged values).
Losses whose implementation is not in this build of fastkd are simply not registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from fastkd import losses as L
from fastkd.boundary.options import DIVERGENCES, FAMILY_PARAMETER
from fastkd.trainer.distributed import sum_over_ranks


@dataclass(frozen=True)
class LossEntry:
    """A registered loss: its factory, what teacher signal it consumes, and a one-line description."""

    factory: Callable[..., Any]
    teacher: str
    description: str


_REGISTRY: dict[str, LossEntry] = {}


def register_loss(
    name: str, factory: Callable[..., Any], *, teacher: str = "logits", description: str = ""
) -> None:
    """Add ``name`` to the registry (``teacher`` is ``"logits"``, ``"topk"`` or ``"hidden"``: a term on
    hidden states, such as ``pkd``, added by its own trainer option rather than used as ``loss_name``)."""
    if teacher not in ("logits", "topk", "hidden"):
        raise ValueError(f"teacher must be 'logits', 'topk' or 'hidden', got {teacher!r}")
    _REGISTRY[name] = LossEntry(factory, teacher, description)


def available_losses() -> list[str]:
    """The registered loss names, sorted."""
    return sorted(_REGISTRY)


def loss_entry(name: str) -> LossEntry:
    """The registry entry for ``name``; ValueError listing the known names otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown loss {name!r}; available: {available_losses()}")
    return _REGISTRY[name]


def build_loss(name: str, **options: Any) -> Any:
    """Instantiate the registered loss ``name`` with its ``options``."""
    entry = loss_entry(name)
    try:
        return entry.factory(**options)
    except TypeError as err:
        raise TypeError(f"bad options {options} for loss {name!r}: {err}") from err


class Divergence:
    """A core fastkd divergence (``fastkd.losses.kd_loss``) with its family parameter bound."""

    def __init__(self, divergence: str, **params: float) -> None:
        allowed = {FAMILY_PARAMETER[divergence][0]} if divergence in FAMILY_PARAMETER else set()
        unknown = set(params) - allowed
        if unknown:
            raise TypeError(
                f"divergence {divergence!r} takes {sorted(allowed) or 'no'} options, got {sorted(unknown)}"
            )
        self.divergence, self.params = divergence, params

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor, **kw: Any) -> torch.Tensor:
        return L.kd_loss(student, teacher, self.divergence, **kw, **self.params)


def masked_mean(per_row: torch.Tensor, mask: torch.Tensor | None, num_items_in_batch: Any) -> torch.Tensor:
    """Sum of ``per_row`` over valid rows divided by ``num_items_in_batch`` (or the valid count)."""
    if mask is not None:
        per_row = per_row.masked_fill(~mask, 0.0)
        count = mask.sum()
    else:
        count = per_row.numel()
    divisor = num_items_in_batch if num_items_in_batch is not None else count
    if isinstance(divisor, torch.Tensor):
        divisor = divisor.to(per_row.device, torch.float32).clamp_min(1)
    else:
        divisor = max(float(divisor), 1.0)
    return per_row.sum() / divisor


class Bound:
    """A fastkd loss function ``fn(student_logits, teacher_logits, **options)`` with options bound."""

    def __init__(self, fn: Callable[..., torch.Tensor], **params: Any) -> None:
        self.fn, self.params = fn, params

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor, **kw: Any) -> torch.Tensor:
        return self.fn(student, teacher, **kw, **self.params)


class SparseTopK:
    """``fastkd.losses.sparse_kl`` on a cached teacher's ``(topk_indices, topk_logprobs)`` (the cache's
    log-probs are taken at the temperature it was written with; ``temperature`` scales the student)."""

    def __init__(self, renormalize: bool = True) -> None:
        self.renormalize = renormalize

    def __call__(
        self, student: torch.Tensor, teacher: tuple[torch.Tensor, torch.Tensor], **kw: Any
    ) -> torch.Tensor:
        indices, logprobs = teacher
        return L.sparse_kl(student, indices, logprobs, renormalize=self.renormalize, **kw)


class SinkhornTerm:
    """SinKD's batch-level Sinkhorn distance ``fastkd.losses.sinkhorn_loss`` (its own τ replaces the
    temperature). Under gradient accumulation each micro-batch's distance is weighted by its share of
    ``num_items_in_batch``, so the step's term is the average over micro-batches."""

    def __init__(self, **params: Any) -> None:
        self.params = params

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor, **kw: Any) -> torch.Tensor:
        mask, n = kw.get("mask"), kw.get("num_items_in_batch")
        loss = L.sinkhorn_loss(student, teacher, mask=mask, backend=kw.get("backend", "auto"), **self.params)
        if n is None:
            return loss
        rows = mask.sum() if mask is not None else student.shape[:-1].numel()
        return loss * rows / (n.to(loss.device, torch.float32) if isinstance(n, torch.Tensor) else float(n))


class LogitMSE:
    """Mean squared error between student and teacher logits (the SinKD code's KD term for STS-B)."""

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor, **kw: Any) -> torch.Tensor:
        per_row = (student.float() - teacher.float()).pow(2).mean(-1)
        return masked_mean(per_row, kw.get("mask"), kw.get("num_items_in_batch"))


for _name in DIVERGENCES:
    register_loss(_name, lambda _d=_name, **p: Divergence(_d, **p), description=f"fastkd {_name}")
register_loss("mse", LogitMSE, description="MSE between logits (regression tasks)")


class TAIDObjective:
    """TAID (Shing et al., arXiv 2501.16937): ``fastkd.losses.taid`` at the t of a ``TAIDSchedule``.

    The schedule advances once per optimizer step (``end_step``) with that step's loss J (the sum of its
    micro-batch losses, each normalised by ``num_items_in_batch``: the full-batch objective); its state
    is the checkpointed ``state_dict``. ``total_steps`` is filled in by the trainer when not given.
    """

    def __init__(
        self,
        total_steps: int,
        t_start: float = 0.4,
        t_end: float = 1.0,
        alpha: float = 5e-4,
        beta: float = 0.99,
    ) -> None:
        self.schedule = L.TAIDSchedule(total_steps, t_start, t_end, alpha, beta)
        self.training = True
        self._step_loss: torch.Tensor | None = None

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor, **kw: Any) -> torch.Tensor:
        return self.record(L.taid(student, teacher, self.t_on(student.device), **kw))

    def t_on(self, device: torch.device) -> torch.Tensor:
        """The schedule's current t (a 0-dim tensor, moved once to ``device``: no host sync)."""
        if self.schedule.t.device != device:
            self.schedule.to(device)
        return self.schedule.t

    def record(self, loss: torch.Tensor) -> torch.Tensor:
        """Add a micro-batch's TAID loss (computed at :meth:`t_on`, by any path: logits or fused-linear)
        to the step's J while training; returns ``loss``."""
        if self.training:
            step_loss = loss.detach()
            self._step_loss = step_loss if self._step_loss is None else self._step_loss + step_loss
        return loss

    def end_step(self) -> None:
        if self._step_loss is not None:
            # Under DDP the step's J is the sum of the ranks' parts: every rank's schedule moves alike.
            self.schedule.update(sum_over_ranks(self._step_loss))
            self._step_loss = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.schedule.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.schedule.load_state_dict(state)

    def logs(self) -> dict[str, float]:
        return {"taid_t": round(float(self.schedule.t), 6)}


register_loss("taid", TAIDObjective, description="TAID with its adaptive schedule (arXiv 2501.16937)")
register_loss("sparse_kl", SparseTopK, teacher="topk", description="KL to a cached top-k teacher")
register_loss("rlkd", lambda **p: Bound(L.rlkd, **p), description="RLKD ranking + divergence")
register_loss("sinkhorn", SinkhornTerm, description="SinKD Sinkhorn distance (arXiv 2402.17110)")

from fastkd.trainer.mpdistil.losses import PKDTerm, ProbMSE  # noqa: E402

register_loss("prob_mse", ProbMSE, description="MPDistil τ²·MSE of softened probabilities")
register_loss("pkd", PKDTerm, teacher="hidden", description="Patient-KD [CLS] term (use --pkd-weight)")
