"""TAID modules (in a file not named taid, so that ``fastkd.losses.taid`` stays the function): the
adaptive interpolation schedule and the loss that owns one (arXiv 2501.16937)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from fastkd.boundary.options import DivergenceOptions, _check_real, _check_unit
from fastkd.functional.taid import taid
from fastkd.losses._base import FixedOptionsLoss


def _check_schedule(total_steps: object, t_start: float, t_end: float, alpha: float, beta: float) -> None:
    if isinstance(total_steps, bool) or not isinstance(total_steps, int):
        raise TypeError(f"total_steps must be an int, got {type(total_steps).__name__} ({total_steps!r})")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    for name, value in (("t_start", t_start), ("t_end", t_end), ("beta", beta)):
        _check_unit(name, value)
    if t_start > t_end:
        raise ValueError(f"t_start must be <= t_end, got t_start={t_start} and t_end={t_end}")
    _check_real("alpha", alpha)
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")


class TAIDSchedule(nn.Module):
    """TAID's adaptive interpolation weight t (arXiv 2501.16937, ``shared/spec/losses.md``).

    State, fp64 device buffers that travel with ``state_dict()``: t (starts at ``t_start``), prev_J,
    the momentum m (0), the step counter (0) and whether a loss was seen. :meth:`update` with the
    objective J of a training step: the first call only records prev_J ← J (and counts the step);
    each later one does, with ``step`` the number of earlier updates,

        δ = (prev_J − J)/(prev_J + 1e-15),  m ← β·m + (1 − β)·δ,
        t_lin = t_start + (t_end − t_start)·step/total_steps,
        t ← min(t_end, max(t_lin, t + α·sigmoid(m)·(1 − t))),  prev_J ← J,

    all as tensor operations on the device (no host sync). Defaults: t_start 0.4, t_end 1.0,
    α 5e-4, β 0.99.
    """

    def __init__(
        self,
        total_steps: int,
        t_start: float = 0.4,
        t_end: float = 1.0,
        alpha: float = 5e-4,
        beta: float = 0.99,
    ) -> None:
        super().__init__()
        _check_schedule(total_steps, t_start, t_end, alpha, beta)
        self.total_steps, self.t_start, self.t_end = total_steps, float(t_start), float(t_end)
        self.alpha, self.beta = float(alpha), float(beta)
        self.register_buffer("t", torch.tensor(self.t_start, dtype=torch.float64))
        self.register_buffer("prev_loss", torch.zeros((), dtype=torch.float64))
        self.register_buffer("momentum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def update(self, loss: torch.Tensor) -> torch.Tensor:
        """Advance the schedule with J = ``loss`` (a one-element tensor, detached here); returns t.

        A non-finite J (a NaN batch) leaves t, prev_J and m as they are (only the step counts), decided
        on the device; a CPU loss also warns (a CUDA one would need a host sync to warn)."""
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"TAIDSchedule.update needs the scalar loss J, got {shape}")
        J = loss.detach().reshape(()).to(device=self.t.device, dtype=torch.float64)
        finite = J.isfinite()
        if not J.is_cuda and not bool(finite):
            warnings.warn(
                f"TAIDSchedule.update got a non-finite loss ({J.item()}); the schedule keeps its state "
                "for this step",
                RuntimeWarning,
                stacklevel=2,
            )
        keep = ~finite
        first = ~self.started
        delta = (self.prev_loss - J) / (self.prev_loss + 1e-15)
        momentum = self.beta * self.momentum + (1.0 - self.beta) * delta
        t_lin = self.t_start + (self.t_end - self.t_start) * self.step.to(torch.float64) / self.total_steps
        t = torch.maximum(t_lin, self.t + self.alpha * torch.sigmoid(momentum) * (1.0 - self.t))
        self.momentum.copy_(torch.where(first | keep, self.momentum, momentum))
        self.t.copy_(torch.where(first | keep, self.t, t.clamp(max=self.t_end)))
        self.prev_loss.copy_(torch.where(keep, self.prev_loss, J))
        self.started.copy_(self.started | finite)
        self.step.add_(1)
        return self.t

    def extra_repr(self) -> str:
        return (
            f"total_steps={self.total_steps}, t_start={self.t_start}, t_end={self.t_end}, "
            f"alpha={self.alpha}, beta={self.beta}"
        )


class TAIDLoss(FixedOptionsLoss):
    """``criterion(student_logits, teacher_logits, labels=None, mask=None, num_items_in_batch=None)``.

    Computes :func:`fastkd.losses.taid` with the current t of its :class:`TAIDSchedule`
    (``self.schedule``), then, in training mode, updates the schedule from the detached loss value
    (one update per call, on the device). ``state_dict()`` carries the schedule, so a resumed run
    continues the same t trajectory. ``total_steps`` and t_start / t_end / alpha / beta are the
    schedule's; the loss options are temperature, reduction ("mean" or "sum": the schedule needs a
    scalar J), ignore_index, backend and inplace_grad. The schedule follows the logits' device.
    """

    function = staticmethod(taid)

    def __init__(
        self,
        total_steps: int,
        t_start: float = 0.4,
        t_end: float = 1.0,
        alpha: float = 5e-4,
        beta: float = 0.99,
        **options: Any,
    ) -> None:
        super().__init__(options)
        checked = {k: options[k] for k in ("temperature", "reduction", "ignore_index") if k in options}
        if DivergenceOptions(**checked).reduction == "none":
            raise ValueError("TAIDLoss needs reduction 'mean' or 'sum' (its schedule needs a scalar loss)")
        self.schedule = TAIDSchedule(total_steps, t_start, t_end, alpha, beta)

    @property
    def t(self) -> torch.Tensor:
        """The current interpolation weight (a 0-dim fp64 tensor)."""
        return self.schedule.t

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        labels: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> torch.Tensor:
        if isinstance(student_logits, torch.Tensor) and self.schedule.t.device != student_logits.device:
            self.schedule.to(student_logits.device)
        loss = taid(
            student_logits,
            teacher_logits,
            self.schedule.t,
            labels=labels,
            mask=mask,
            num_items_in_batch=num_items_in_batch,
            **self.options,
        )
        if self.training:
            self.schedule.update(loss)
        return loss
