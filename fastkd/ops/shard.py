"""The vocabulary-parallel phases of the fused row kernels, registered as custom ops.

Used by :mod:`fastkd.parallel` (phases in :mod:`fastkd.boundary.parallel`): the student and teacher
rows are one rank's contiguous slice [N, V_r] of the vocabulary, and ``stats`` (fp32 [N, 4],
contiguous) carries per-row statistics between the phases and the collectives that combine them:

- ``STATS`` writes the slice's log-sum-exps (lse_a of a = u/T, lse_b of b = z/T, lse_z of the raw z
  for the hard-label term; TAID: lse_b and the log-sum-exp of its mixed target logits). Reads 2·N·V_r.
- ``ROW_SUM`` reads the global log-sum-exps and writes the slice's c = Σ q·h into column 3 (the
  divergences whose gradient needs it: reverse_kl, jsd, skew KLs, tvd). Reads 2·N·V_r.
- ``GRAD`` reads the global statistics (column 3 holding the global c), returns the slice's soft loss
  terms per row (fp32 [N], not weighted by 1 − hard_label_weight) and writes the slice's gradient,
  ``scale``·∂loss/∂student, hard-label part included; ``labels`` are then slice-local ids (out of
  [0, V_r) when another rank holds the label's logit). Reads 2·N·V_r, writes N·V_r.

Same kernels as the single-process ops (``fastkd::divergence_fwd``, ``fastkd::divergence_cpu`` and
its TAID mode, ``fastkd::taid_fwd``): a phase argument selects the entry; AKL has none (its head
threshold is not a row statistic).
"""

from __future__ import annotations

import torch

from fastkd.boundary.options import DIVERGENCES
from fastkd.ops.divergence import launch_policy, mixture_log_weights, row_losses
from fastkd.ops.divergence_cpu import run_cpu_kernel
from fastkd.ops.sparse import launch_policy as sparse_launch_policy
from fastkd.ops.sparse import run_sparse_cpu

DEVICES = ("cuda", "cpu")  # the Triton ops run on CPU tensors under the Triton interpreter


@torch.library.custom_op("fastkd::divergence_shard_cpu", mutates_args=("grad", "stats"), device_types="cpu")
def divergence_shard_cpu(
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor,
    labels: torch.Tensor | None,
    scale: torch.Tensor,
    grad: torch.Tensor,
    stats: torch.Tensor,
    divergence: str,
    param: float,
    temperature: float,
    hard_label_weight: float,
    phase: int,
) -> torch.Tensor:
    """One vocabulary-parallel ``phase`` of the C++ divergence kernels on a slice (see the module); no
    softcaps: the vocabulary-parallel logits arrive transformed."""
    return run_cpu_kernel(
        student, teacher, valid, labels, scale, grad, divergence, param, temperature, hard_label_weight,
        phase=phase, stats=stats,
    )  # fmt: skip


@torch.library.custom_op("fastkd::taid_shard_cpu", mutates_args=("grad", "stats"), device_types="cpu")
def taid_shard_cpu(
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor,
    t: torch.Tensor,
    scale: torch.Tensor,
    grad: torch.Tensor,
    stats: torch.Tensor,
    temperature: float,
    phase: int,
) -> torch.Tensor:
    """One vocabulary-parallel ``phase`` (STATS or GRAD) of the C++ divergence kernel's TAID mode on a
    slice: ``stats`` columns 0 and 1 hold the log-sum-exps of the mixed target logits and of b = z/T
    (the kernel's lse_a, lse_b: both become global the same way). A slice whose raw teacher holds NaN
    or +inf makes its row NaN at every t (a slice may be all −inf: padding)."""
    return run_cpu_kernel(
        student, teacher, valid, None, scale, grad, "taid", float(t), temperature, 0.0,
        phase=phase, stats=stats,
    )  # fmt: skip


@torch.library.custom_op("fastkd::divergence_shard_fwd", mutates_args=("grad", "stats"), device_types=DEVICES)
def divergence_shard_fwd(
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor,
    labels: torch.Tensor | None,
    scale: torch.Tensor,
    grad: torch.Tensor,
    stats: torch.Tensor,
    divergence: str,
    param: float,
    temperature: float,
    hard_label_weight: float,
    phase: int,
) -> torch.Tensor:
    """One vocabulary-parallel ``phase`` of the Triton divergence kernel on a slice (see the module)."""
    from fastkd.kernels.divergence import divergence_shard_kernel

    rows, vocab = student.shape
    loss = row_losses(student).zero_()
    if rows == 0:
        return loss
    config = launch_policy(vocab)
    lw1, lw2 = mixture_log_weights(divergence, param)
    hard = hard_label_weight > 0.0
    divergence_shard_kernel[(rows,)](
        student,
        teacher,
        grad,
        loss,
        stats,
        valid.view(torch.uint8),
        labels if hard else valid,
        scale,
        student.stride(0),
        teacher.stride(0),
        grad.stride(0),
        vocab,
        1.0 / temperature,
        param,
        lw1,
        lw2,
        hard_label_weight,
        DIV=DIVERGENCES.index(divergence),
        HARD=hard,
        PHASE=phase,
        BLOCK=config.block,
        num_warps=config.warps,
    )
    return loss


@torch.library.custom_op("fastkd::taid_shard_fwd", mutates_args=("grad", "stats"), device_types=DEVICES)
def taid_shard_fwd(
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor,
    t: torch.Tensor,
    scale: torch.Tensor,
    grad: torch.Tensor,
    stats: torch.Tensor,
    temperature: float,
    phase: int,
) -> torch.Tensor:
    """One vocabulary-parallel ``phase`` (STATS or GRAD) of the Triton TAID kernel on a slice; ``stats``
    columns 0 and 1 hold the log-sum-exps of b = z/T and of the mixed target logits."""
    from fastkd.kernels.taid import taid_shard_kernel

    rows, vocab = student.shape
    loss = row_losses(student).zero_()
    if rows == 0:
        return loss
    config = launch_policy(vocab)
    taid_shard_kernel[(rows,)](
        student,
        teacher,
        grad,
        loss,
        stats,
        valid.view(torch.uint8),
        t,
        scale,
        student.stride(0),
        teacher.stride(0),
        grad.stride(0),
        vocab,
        1.0 / temperature,
        PHASE=phase,
        BLOCK=config.block,
        num_warps=config.warps,
    )
    return loss


@torch.library.custom_op("fastkd::sparse_kl_shard_fwd", mutates_args=("grad", "stats"), device_types=DEVICES)
def sparse_kl_shard_fwd(
    student: torch.Tensor,
    indices: torch.Tensor,
    logprobs: torch.Tensor,
    rest: torch.Tensor,
    valid: torch.Tensor,
    scale: torch.Tensor,
    grad: torch.Tensor,
    stats: torch.Tensor,
    rest_bucket: bool,
    temperature: float,
    phase: int,
) -> torch.Tensor:
    """One vocabulary-parallel ``phase`` (STATS or GRAD) of the Triton sparse-KL kernel on a slice.

    ``indices``: int64 [N, k] slice-local ids (global id − the slice's offset; ascending per row when
    ``rest_bucket``), ``logprobs`` fp32 [N, k], ``rest`` fp32 [N] (the teacher's log rest mass).
    STATS writes the slice's log-sum-exps of b (all columns; outside the support) into ``stats``
    columns 0, 1; GRAD reads the global ones there, writes the slice's gradient and returns its
    −Σ p̃_k b_k over the slots it holds.
    """
    from fastkd.kernels.sparse import sparse_kl_shard_kernel

    rows, vocab = student.shape
    k = indices.shape[1]
    loss = row_losses(student).zero_()
    if rows == 0:
        return loss
    config = sparse_launch_policy(vocab, k)
    sparse_kl_shard_kernel[(rows,)](
        student,
        indices,
        logprobs,
        rest,
        grad,
        loss,
        stats,
        valid.view(torch.uint8),
        scale,
        student.stride(0),
        grad.stride(0),
        vocab,
        k,
        1.0 / temperature,
        REST=rest_bucket,
        PHASE=phase,
        BLOCK=config.block,
        K_BLOCK=config.k_block,
        num_warps=config.warps,
    )
    return loss


@torch.library.custom_op("fastkd::sparse_kl_shard_cpu", mutates_args=("grad", "stats"), device_types="cpu")
def sparse_kl_shard_cpu(
    student: torch.Tensor,
    indices: torch.Tensor,
    logprobs: torch.Tensor,
    rest: torch.Tensor,
    valid: torch.Tensor,
    scale: torch.Tensor,
    grad: torch.Tensor,
    stats: torch.Tensor,
    rest_bucket: bool,
    temperature: float,
    phase: int,
) -> torch.Tensor:
    """As ``fastkd::sparse_kl_shard_fwd`` on the C++ sparse kernel (``csrc/sparse_cpu.cpp``): STATS
    reads N·V_r elements (twice over the row buffer with ``rest_bucket``), GRAD reads N·V_r and writes
    N·V_r; the slice-local indices need no order."""
    return run_sparse_cpu(
        student, indices, logprobs, rest, valid, scale, grad, rest_bucket, temperature,
        phase=phase, stats=stats,
    )  # fmt: skip


_SHARD_OPS = (
    divergence_shard_cpu,
    divergence_shard_fwd,
    taid_shard_cpu,
    taid_shard_fwd,
    sparse_kl_shard_cpu,
    sparse_kl_shard_fwd,
)
for _op in _SHARD_OPS:
    _op.register_fake(row_losses)
