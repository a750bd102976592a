"""The fused sparse-teacher KL kernels as custom ops: ``fastkd::sparse_kl_fwd`` (Triton) and
``fastkd::sparse_kl_cpu`` (C++, ``csrc/sparse_cpu.cpp``), each with a loss-only op for evaluation."""

from __future__ import annotations

from typing import NamedTuple

import torch

from fastkd.boundary.sparse import has_rest_bucket
from fastkd.ops.divergence import launch_policy as divergence_launch_policy
from fastkd.ops.divergence import row_losses


class SparseLaunchConfig(NamedTuple):
    block: int
    k_block: int
    warps: int


def launch_policy(vocab: int, k: int) -> SparseLaunchConfig:
    """The divergence family's vocabulary tiles and warps (same reasoning: few configurations); slots in
    chunks of up to 256 (at least 16)."""
    base = divergence_launch_policy(vocab)
    k_block = min(max(16, 1 << (k - 1).bit_length()), 256)
    return SparseLaunchConfig(base.block, k_block, base.warps)


def launch_sparse_kl(
    student: torch.Tensor,
    indices: torch.Tensor,
    logprobs: torch.Tensor,
    rest: torch.Tensor,
    valid: torch.Tensor,
    scale: torch.Tensor,
    grad: torch.Tensor | None,
    renormalize: bool,
    temperature: float,
) -> torch.Tensor:
    """Run the sparse-teacher kernel: per-token loss [N]; writes the gradient into ``grad`` unless None."""
    from fastkd.kernels.sparse import sparse_kl_kernel  # triton is imported on first launch only

    rows, vocab = student.shape
    k = indices.shape[1]
    loss = row_losses(student)
    if rows == 0:
        return loss
    rest_bucket = has_rest_bucket(renormalize, k, vocab)
    logprobs = logprobs.to(torch.float32)
    if rest_bucket:
        indices, order = indices.sort(dim=-1)
        logprobs = logprobs.gather(-1, order)
    config = launch_policy(vocab, k)
    target = student if grad is None else grad
    sparse_kl_kernel[(rows,)](
        student,
        indices.contiguous(),
        logprobs.contiguous(),
        rest,
        target,
        loss,
        valid.view(torch.uint8),
        scale,
        student.stride(0),
        target.stride(0),
        vocab,
        k,
        1.0 / temperature,
        REST=rest_bucket,
        BLOCK=config.block,
        K_BLOCK=config.k_block,
        WRITE_GRAD=grad is not None,
        num_warps=config.warps,
    )
    return loss


@torch.library.custom_op("fastkd::sparse_kl_fwd", mutates_args=("grad",), device_types=("cuda", "cpu"))
def sparse_kl_fwd(
    student: torch.Tensor,
    indices: torch.Tensor,
    logprobs: torch.Tensor,
    rest: torch.Tensor,
    valid: torch.Tensor,
    scale: torch.Tensor,
    grad: torch.Tensor,
    renormalize: bool,
    temperature: float,
) -> torch.Tensor:
    """Per-token loss [N] (fp32) of the sparse-teacher KL; writes scale·∂loss/∂student into ``grad``.

    ``student``, ``grad``: [N, V], unit stride along V; ``indices``: int64 [N, k]; ``logprobs``: [N, k]
    teacher log-probs at T = 1; ``rest``: fp32 [N], log of the teacher's rest mass (-inf for none);
    ``valid``: bool [N]; ``scale``: fp32 [] (1/N_valid for a mean). With a rest bucket the indices are
    sorted per row first (the kernel walks them in ascending order). Reads 2·N·V elements and writes N·V.
    """
    return launch_sparse_kl(student, indices, logprobs, rest, valid, scale, grad, renormalize, temperature)


@torch.library.custom_op("fastkd::sparse_kl_loss", mutates_args=(), device_types=("cuda", "cpu"))
def sparse_kl_loss(
    student: torch.Tensor,
    indices: torch.Tensor,
    logprobs: torch.Tensor,
    rest: torch.Tensor,
    valid: torch.Tensor,
    renormalize: bool,
    temperature: float,
) -> torch.Tensor:
    """Per-token loss [N] (fp32) only, for evaluation: reads N·V elements once, writes nothing else."""
    one = torch.ones((), dtype=torch.float32, device=student.device)
    return launch_sparse_kl(student, indices, logprobs, rest, valid, one, None, renormalize, temperature)


def run_sparse_cpu(
    student: torch.Tensor,
    indices: torch.Tensor,
    logprobs: torch.Tensor,
    rest: torch.Tensor,
    valid: torch.Tensor,
    scale: torch.Tensor,
    grad: torch.Tensor | None,
    rest_bucket: bool,
    temperature: float,
    student_softcap: float = 0.0,
    phase: int = 0,
    stats: torch.Tensor | None = None,
) -> torch.Tensor:
    """The one call of ``fastkd._C.sparse_kl_fwd_cpu`` (indices in any order; no sort needed): the
    single-process ops below (phase 0) and the vocabulary-parallel phases of ``fastkd.ops.shard``."""
    from fastkd import _C  # the extension is loaded on first use only

    return _C.sparse_kl_fwd_cpu(
        student,
        indices.contiguous(),
        logprobs.to(torch.float32).contiguous(),
        rest,
        valid,
        scale,
        grad,
        rest_bucket,
        temperature,
        student_softcap,
        phase,
        stats,
    )


@torch.library.custom_op("fastkd::sparse_kl_cpu", mutates_args=("grad",), device_types="cpu")
def sparse_kl_cpu(
    student: torch.Tensor,
    indices: torch.Tensor,
    logprobs: torch.Tensor,
    rest: torch.Tensor,
    valid: torch.Tensor,
    scale: torch.Tensor,
    grad: torch.Tensor,
    renormalize: bool,
    temperature: float,
    student_softcap: float = 0.0,
) -> torch.Tensor:
    """As ``fastkd::sparse_kl_fwd`` on the C++ kernel: reads N·V elements once (each row then stays in
    the thread's cache) and writes N·V; ``grad`` may be ``student`` itself. ``student_softcap`` c > 0
    makes the kernel read c·tanh(z/c) and chain the gradient through it (the fused-linear path)."""
    rest_bucket = has_rest_bucket(renormalize, indices.shape[1], student.shape[1])
    return run_sparse_cpu(
        student, indices, logprobs, rest, valid, scale, grad, rest_bucket, temperature, student_softcap
    )


@torch.library.custom_op("fastkd::sparse_kl_loss_cpu", mutates_args=(), device_types="cpu")
def sparse_kl_loss_cpu(
    student: torch.Tensor,
    indices: torch.Tensor,
    logprobs: torch.Tensor,
    rest: torch.Tensor,
    valid: torch.Tensor,
    renormalize: bool,
    temperature: float,
) -> torch.Tensor:
    """Per-token loss [N] (fp32) only, on the C++ kernel: reads N·V elements once, writes nothing else."""
    one = torch.ones((), dtype=torch.float32)
    rest_bucket = has_rest_bucket(renormalize, indices.shape[1], student.shape[1])
    return run_sparse_cpu(student, indices, logprobs, rest, valid, one, None, rest_bucket, temperature)


for _op in (sparse_kl_fwd, sparse_kl_loss, sparse_kl_cpu, sparse_kl_loss_cpu):
    _op.register_fake(row_losses)
