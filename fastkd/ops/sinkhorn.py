"""Launchers of the SinKD cost kernels, registered as ``fastkd::sinkhorn_cost`` and
``fastkd::sinkhorn_cost_grad``.

``impl="triton"`` runs kernels/sinkhorn.py (CUDA, or CPU under TRITON_INTERPRET=1); ``impl="torch"`` is
the same computation in chunked PyTorch ops (fastkd/ops/sinkhorn_torch.py): the CPU path of the fused
loss, which needs no D (its backward gets Σ_v q⊙h from h itself).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from fastkd.ops import sinkhorn_torch


class SinkhornLaunch(NamedTuple):
    block_i: int
    block_j: int
    block_v: int
    lse_block: int
    warps: int


def launch_policy(rows: int, vocab: int) -> SinkhornLaunch:
    """Tiles for ``rows`` rows of ``vocab`` entries, one of three so that few kernels compile: class
    counts (GLUE, V ≤ 4) take 32×32 pairs × 4 classes; up to 4 wide rows take 4×4 pairs × 256 columns
    (16×16 tiles would idle 15/16 of the lanes); anything else 16×16 pairs × 32 columns. Each is 4096 or
    8192 pair terms a step: 32 or 64 a thread with 4 warps."""
    lse_block = 128 if vocab <= 128 else 1024
    if vocab <= 4:
        return SinkhornLaunch(32, 32, 4, lse_block, 4)
    if rows <= 4:
        return SinkhornLaunch(4, 4, 256, lse_block, 4)
    return SinkhornLaunch(16, 16, 32, lse_block, 4)


def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def _cost_triton(
    student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor, inv_tau: float, with_d: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from fastkd.kernels.sinkhorn import cost_kernel, row_lse_kernel

    rows, vocab = student.shape
    config = launch_policy(rows, vocab)
    lse_s = student.new_empty(rows, dtype=torch.float32)
    lse_t = student.new_empty(rows, dtype=torch.float32)
    w = student.new_empty(rows, rows, dtype=torch.float32)
    d = student.new_empty((rows, rows) if with_d else (0, 0), dtype=torch.float32)
    row_lse_kernel[(rows,)](
        student, teacher, lse_s, lse_t, student.stride(0), teacher.stride(0), vocab, inv_tau,
        BLOCK=config.lse_block, num_warps=config.warps,
    )  # fmt: skip
    grid = (_cdiv(rows, config.block_i), _cdiv(rows, config.block_j))
    cost_kernel[grid](
        student, teacher, lse_s, lse_t, valid.view(torch.uint8), w, d if with_d else w,
        student.stride(0), teacher.stride(0), rows, vocab, inv_tau,
        WITH_D=with_d, BI=config.block_i, BJ=config.block_j, BV=config.block_v, num_warps=config.warps,
    )  # fmt: skip
    return w, d, lse_s, lse_t


@torch.library.custom_op("fastkd::sinkhorn_cost", mutates_args=(), device_types=("cuda", "cpu"))
def sinkhorn_cost(
    student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor, inv_tau: float, with_d: bool, impl: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W, D, lse_s, lse_t): W [B, B] = L1 cost between softmax(student/τ) rows and softmax(teacher/τ)
    rows, D [B, B] = Σ_v q_iv·sign(q_iv − p_jv) (empty [0, 0] unless ``with_d``), and the fp32 [B]
    log-sum-exps of z/τ and u/τ. ``student``, ``teacher``: [B, V], unit stride along V; ``valid``: bool [B].
    """
    if impl == "triton" and student.shape[0] > 0:
        return _cost_triton(student, teacher, valid, inv_tau, with_d)
    if with_d and student.shape[0] > 0:
        raise ValueError("impl 'torch' computes no D: its gradient takes Σ_v q⊙h from h itself")
    w, lse_s, lse_t = sinkhorn_torch.cost(student, teacher, valid, inv_tau)
    return w, w.new_zeros((w.shape[0],) * 2 if with_d else (0, 0)), lse_s, lse_t


@sinkhorn_cost.register_fake
def _sinkhorn_cost_fake(
    student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor, inv_tau: float, with_d: bool, impl: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = student.shape[0]
    square = student.new_empty(rows, rows, dtype=torch.float32)
    d = student.new_empty((rows, rows) if with_d else (0, 0), dtype=torch.float32)
    lse = student.new_empty(rows, dtype=torch.float32)
    return square, d, lse, lse.clone()


@torch.library.custom_op("fastkd::sinkhorn_cost_grad", mutates_args=(), device_types=("cuda", "cpu"))
def sinkhorn_cost_grad(
    student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor, lse_s: torch.Tensor,
    lse_t: torch.Tensor, g: torch.Tensor, d: torch.Tensor, inv_tau: float, impl: str,
) -> torch.Tensor:  # fmt: skip
    """dS/dz [B, V] in the student's dtype from G = dS/dW (fp32 [B, B], zero at invalid pairs):
    q_iv·(h_iv − c_i)/τ with h_iv = Σ_j G_ij·sign(q_iv − p_jv) and c_i = Σ_v q_iv h_iv, which the Triton
    path takes from D (the cost op's, [B, B]) as Σ_j G_ij D_ij; the torch path ignores ``d``."""
    g = g.float().contiguous()
    if impl != "triton" or student.shape[0] == 0:
        return sinkhorn_torch.cost_grad(student, teacher, valid, lse_s, lse_t, g, inv_tau)
    from fastkd.kernels.sinkhorn import cost_grad_kernel

    c = (g * d).sum(1)
    rows, vocab = student.shape
    config = launch_policy(rows, vocab)
    grad = torch.empty_like(student)
    grid = (_cdiv(rows, config.block_i), _cdiv(vocab, config.block_v))
    cost_grad_kernel[grid](
        student, teacher, lse_s, lse_t, valid.view(torch.uint8), g, c, grad,
        student.stride(0), teacher.stride(0), grad.stride(0), rows, vocab, inv_tau,
        BI=config.block_i, BJ=config.block_j, BV=config.block_v, num_warps=config.warps,
    )  # fmt: skip
    return grad


@sinkhorn_cost_grad.register_fake
def _sinkhorn_cost_grad_fake(student: torch.Tensor, *args: object) -> torch.Tensor:
    return torch.empty_like(student)
