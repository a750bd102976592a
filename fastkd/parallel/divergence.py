"""Vocabulary-parallel KD losses: each rank holds a contiguous slice of the vocabulary (Megatron's
column-parallel LM-head layout) and the loss is the one of the full rows.

Per call, with a = u/T, b = z/T on the slice: the STATS phase gives the slice's log-sum-exps, two
all-reduces (max, sum of exponentials) make them global; for reverse_kl, jsd, the skew KLs and tvd a
ROW_SUM phase gives the slice's c = Σ q·h and one all-reduce makes it global; the GRAD phase writes
the slice's gradient and its loss terms, and one all-reduce sums those. That is 3 or 4 all-reduces of
at most 3 fp32 per row, plus one all-gather of 3 int64 per rank (slice sizes, agreed input checks):
O(rows), never O(rows × V). Backward only rescales the gradient made in the forward (no collective).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from fastkd.boundary.inputs import FlatInputs, reduce_rows, unit_stride
from fastkd.boundary.options import DivergenceOptions
from fastkd.boundary.parallel import CONSTANT_ROW_SUM, GRAD, ROW_SUM, STATS, ShardLayout
from fastkd.functions.divergence import rescaled_gradient, save_fused_gradient
from fastkd.ops.shard import divergence_shard_cpu, divergence_shard_fwd, taid_shard_cpu, taid_shard_fwd
from fastkd.parallel.comm import all_reduce_sum_, global_logsumexp_
from fastkd.reference.shard import divergence_shard_torch, taid_shard_torch

_DIVERGENCE_PHASES = {
    "cpu": divergence_shard_cpu,
    "triton": divergence_shard_fwd,
    "torch": divergence_shard_torch,
}
_TAID_PHASES = {"cpu": taid_shard_cpu, "triton": taid_shard_fwd, "torch": taid_shard_torch}


@dataclass(frozen=True)
class ShardCall:
    """Everything a vocabulary-parallel forward needs besides the student slice. ``labels`` are
    slice-local ids (the global id minus the slice's offset); ``t`` is TAID's weight (None otherwise)."""

    flat: FlatInputs
    labels: torch.Tensor | None
    options: DivergenceOptions
    t: torch.Tensor | None
    layout: ShardLayout
    group: dist.ProcessGroup | None
    backend: str

    def loss_rows(self, student: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        if self.options.divergence == "akl":
            from fastkd.parallel.akl import akl_loss_rows

            return akl_loss_rows(self, student, grad)
        return shard_loss_rows(self, student, grad)

    def reduce(self, loss_rows: torch.Tensor) -> torch.Tensor:
        return reduce_rows(loss_rows, self.flat.leading_shape, self.flat.divisor, self.options.reduction)


def _run_phase(call: ShardCall, student: torch.Tensor, grad: torch.Tensor, stats: torch.Tensor, phase: int):
    o, flat = call.options, call.flat
    scale = flat.divisor.reciprocal()
    if call.t is not None:
        op = _TAID_PHASES[call.backend]
        return op(student, flat.teacher, flat.valid, call.t, scale, grad, stats, o.temperature, phase)
    op = _DIVERGENCE_PHASES[call.backend]
    return op(
        student,
        flat.teacher,
        flat.valid,
        call.labels,
        scale,
        grad,
        stats,
        o.divergence,
        o.param,
        o.temperature,
        o.hard_label_weight,
        phase,
    )


def _globalise_columns_(stats: torch.Tensor, columns: slice, group: dist.ProcessGroup | None, lse: bool):
    part = stats[:, columns].contiguous()
    stats[:, columns] = global_logsumexp_(part, group) if lse else all_reduce_sum_(part, group)


def _label_logits(student: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """z at the slice-local label where this slice holds it, else 0 (fp32 [N])."""
    here = (labels >= 0) & (labels < student.shape[-1])
    picked = student.gather(-1, labels.clamp(0, student.shape[-1] - 1)[:, None])[:, 0]
    return torch.where(here, picked.to(torch.float32), 0.0)


def _poison_taid_(stats: torch.Tensor, valid: torch.Tensor) -> None:
    """TAID's rows are decided by the raw teacher at every t, as in one process: the mix (1 − t)·b + t·a
    hides a NaN, +inf or all −inf teacher at t = 0, so column 2 holds the global log-sum-exp of the
    slices' maxima (NaN or +inf if any slice has one, −inf if every slice is −inf), and where that is
    not finite the global statistics become NaN, which gives the row loss NaN and a NaN gradient."""
    bad = valid & ~stats[:, 2].isfinite()
    stats[:, :2] = stats[:, :2].masked_fill(bad[:, None], float("nan"))


def shard_loss_rows(call: ShardCall, student: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The global per-row losses [N] (fp32, identical on every rank); writes the slice's gradient."""
    o = call.options
    stats = torch.zeros(student.shape[0], 4, dtype=torch.float32, device=student.device)
    hard = call.t is None and o.hard_label_weight > 0
    _run_phase(call, student, grad, stats, STATS)
    if call.t is not None:
        stats[:, 2] = call.flat.teacher.amax(-1)  # TAID: the raw teacher's slice maxima (see _poison_taid_)
    _globalise_columns_(stats, slice(0, 3 if hard or call.t is not None else 2), call.group, lse=True)
    if call.t is not None:
        _poison_taid_(stats, call.flat.valid)
    if call.t is None and o.divergence not in CONSTANT_ROW_SUM:
        _run_phase(call, student, grad, stats, ROW_SUM)
        _globalise_columns_(stats, slice(3, 4), call.group, lse=False)
    if hard:  # read before the GRAD phase, which may write the gradient over the student
        label_logits = _label_logits(student, call.labels)
    loss = _run_phase(call, student, grad, stats, GRAD)
    if hard:
        w = o.hard_label_weight
        loss = (1.0 - w) * loss - w * label_logits
    all_reduce_sum_(loss, call.group)
    if hard:
        loss = loss + torch.where(call.flat.valid, o.hard_label_weight * stats[:, 2], 0.0)
    return loss


class VocabParallelFunction(torch.autograd.Function):
    """A vocabulary-parallel loss whose forward writes ∂loss/∂(student slice): ``call`` (a
    :class:`ShardCall` or a sparse one) gives the global loss rows and their reduction. Backward
    rescales the gradient by ``grad_output`` in place (one backward per forward), with no collective."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, student: torch.Tensor, call: ShardCall):
        student = unit_stride(student)
        grad = torch.empty_like(student)
        loss_rows = call.loss_rows(student, grad)
        save_fused_gradient(ctx, grad, call.options.reduction)
        return call.reduce(loss_rows)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor) -> tuple:
        return rescaled_gradient(ctx, grad_output), None
