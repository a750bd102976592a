"""Vocabulary-parallel fused-linear KD: a column-parallel LM head, logits never formed in full.

Rank r holds the rows [V_r, H] of both LM-head weights (and biases) for its slice of the vocabulary;
the hidden states are replicated. The chunk loop of :mod:`fastkd.ops.fused_linear` (the same
``Projection``) gives each chunk's slice logits; the vocabulary-parallel phases and their O(rows)
all-reduces (:func:`fastkd.parallel.divergence.shard_loss_rows`) write the slice's gradient over them;
then d(weight slice) += gᵀ h and the slice's share of d(hidden) = g @ W. One all-reduce of the hidden
gradient [N, H_s] at the end of the forward sums the shares, so backward only rescales.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.distributed as dist

from fastkd.boundary.fused_linear import FusedLinearInputs, FusedLinearOptions, auto_chunk_size
from fastkd.boundary.inputs import FlatInputs, reduce_rows
from fastkd.boundary.parallel import ShardLayout
from fastkd.ops.fused_linear import Projection, _outputs
from fastkd.ops.rescale import rescale_
from fastkd.parallel.comm import all_reduce_sum_
from fastkd.parallel.divergence import ShardCall


@dataclass(frozen=True)
class FusedShardCall:
    """A vocabulary-parallel fused-linear call: flattened inputs (weights are this rank's slices),
    options (``options.loss`` with the real hard-label weight), slice-local labels, TAID's t."""

    flat: FusedLinearInputs
    options: FusedLinearOptions
    labels: torch.Tensor | None
    t: torch.Tensor | None
    layout: ShardLayout
    group: dist.ProcessGroup | None
    backend: str
    gemm_dtype: torch.dtype


def _chunk_rows(call: FusedShardCall) -> int:
    """Tokens per chunk, the same on every rank (their collectives pair up): sized by the largest slice."""
    options, flat = call.options, call.flat
    if options.chunk_size is not None:
        return options.chunk_size
    buffers = 2.0 + (options.student.cap > 0.0) + 0.5 * (flat.hidden.dtype != torch.float32)
    return auto_chunk_size(flat.hidden.shape[0], max(call.layout.sizes), buffers)


def _chunk(call: FusedShardCall, student: Projection, teacher: Projection, rows: torch.Tensor, out: tuple):
    """One chunk of valid rows: loss rows into out[0], the gradients added into out[1:]."""
    loss, *grads = out
    h, z, chain = student.logits(rows)
    u = teacher.logits(rows)[1]
    # The kernels scale the gradient by 1/divisor; the logit scale s joins it (chain rule of s·x).
    flat = FlatInputs(
        student=z,
        teacher=u,
        valid=torch.ones(rows.shape[0], dtype=torch.bool, device=rows.device),
        labels=None,
        leading_shape=rows.shape,
        divisor=call.flat.divisor / student.scale,
    )
    labels = None if call.labels is None else call.labels.index_select(0, rows)
    shard = ShardCall(flat, labels, call.options.loss, call.t, call.layout, call.group, call.backend)
    loss.index_copy_(0, rows, shard.loss_rows(z, z))
    if chain is not None:
        z.mul_(chain)
    student.backward(rows, h, z, tuple(grads))


def fused_shard_pass(call: FusedShardCall) -> tuple[torch.Tensor, ...]:
    """(global loss rows [N], d hidden summed over the group, d weight slice, d bias slice or [0])."""
    flat, options = call.flat, call.options
    loss, (_, *weight_grads) = _outputs(flat.hidden, flat.weight, flat.bias, options.grad_weight_dtype, True)
    # The slices' shares of d hidden are summed in fp32 (one rounding to the hidden dtype, at the end).
    grads = (torch.zeros(flat.hidden.shape, dtype=torch.float32, device=flat.hidden.device), *weight_grads)
    with torch.autocast(flat.hidden.device.type, enabled=False):  # the GEMM dtype is explicit
        s, u = options.student, options.teacher
        student = Projection(flat.hidden, flat.weight, flat.bias, s.scale, s.cap, call.gemm_dtype)
        teacher = Projection(
            flat.teacher_hidden, flat.teacher_weight, flat.teacher_bias, u.scale, u.cap, call.gemm_dtype
        )
        for rows in flat.valid.nonzero().squeeze(1).split(_chunk_rows(call)):
            _chunk(call, student, teacher, rows, (loss, *grads))
    grad_hidden = all_reduce_sum_(grads[0], call.group).to(flat.hidden.dtype)
    return (loss, grad_hidden, *weight_grads)


class VocabParallelFusedLinearFunction(torch.autograd.Function):
    """Fused-linear KD of (hidden [N, H_s] replicated, weight slice [V_r, H_s], bias slice or None):
    every gradient is made in the forward; backward rescales them by ``grad_output`` in place."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, call: FusedShardCall) -> torch.Tensor:
        loss_rows, *grads = fused_shard_pass(call)
        ctx.save_for_backward(*grads)
        ctx.has_bias = bias is not None
        ctx.spent = False
        flat = call.flat
        return reduce_rows(loss_rows, flat.leading_shape, flat.divisor, call.options.loss.reduction)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple:
        if ctx.spent:
            raise RuntimeError("a fused fastkd loss supports one backward per forward; recompute the loss")
        ctx.spent = True
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        scale = grad_output.reshape(()).to(torch.float32).contiguous()
        for grad in (grad_hidden, grad_weight, grad_bias.view(1, -1)):
            rescale_(grad, scale)
        return grad_hidden, grad_weight, grad_bias if ctx.has_bias else None, None


def local_options(options: FusedLinearOptions) -> FusedLinearOptions:
    """The options for the per-rank input checks: labels are global ids, checked against the global V."""
    return replace(options, loss=replace(options.loss, hard_label_weight=0.0))
