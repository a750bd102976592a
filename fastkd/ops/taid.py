"""The fused TAID kernels as custom ops: ``fastkd::taid_fwd`` (Triton) and ``fastkd::taid_cpu`` (the
C++ divergence kernel's TAID mode), each with a loss-only op for evaluation."""

from __future__ import annotations

import torch

from fastkd.ops.divergence import launch_policy, row_losses
from fastkd.ops.divergence_cpu import run_cpu_kernel


def launch_taid(
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor,
    t: torch.Tensor,
    scale: torch.Tensor,
    grad: torch.Tensor | None,
    temperature: float,
) -> torch.Tensor:
    """Run the TAID kernel: per-token loss [N]; writes the gradient into ``grad`` unless it is None."""
    from fastkd.kernels.taid import taid_kernel  # triton is imported on first launch only

    rows, vocab = student.shape
    loss = row_losses(student)
    if rows == 0:
        return loss
    config = launch_policy(vocab)
    target = student if grad is None else grad
    taid_kernel[(rows,)](
        student,
        teacher,
        target,
        loss,
        valid.view(torch.uint8),
        t,
        scale,
        student.stride(0),
        teacher.stride(0),
        target.stride(0),
        vocab,
        1.0 / temperature,
        BLOCK=config.block,
        WRITE_GRAD=grad is not None,
        num_warps=config.warps,
    )
    return loss


@torch.library.custom_op("fastkd::taid_fwd", mutates_args=("grad",), device_types=("cuda", "cpu"))
def taid_fwd(
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor,
    t: torch.Tensor,
    scale: torch.Tensor,
    grad: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Per-token TAID loss [N] (fp32); writes scale·∂loss/∂student into ``grad`` [N, V].

    ``student``, ``teacher``, ``grad``: [N, V] with unit stride along V; ``valid``: bool [N];
    ``t``: fp32 [] interpolation weight, read by the kernel from device memory; ``scale``: fp32 []
    (1/N_valid for a mean). ``grad`` may be ``student`` itself (in-place gradient). Two passes that
    read 2·N·V elements each, one write of N·V. The launch policy is the divergence family's: the same
    tile widths and warps suit a kernel with the same loads and fewer registers. Rows with NaN or +inf
    (or −inf everywhere) get loss NaN and a NaN gradient row.
    """
    return launch_taid(student, teacher, valid, t, scale, grad, temperature)


@torch.library.custom_op("fastkd::taid_loss", mutates_args=(), device_types=("cuda", "cpu"))
def taid_loss(
    student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor, t: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Per-token TAID loss [N] (fp32) only, for evaluation: two passes of reads, nothing written."""
    one = torch.ones((), dtype=torch.float32, device=student.device)
    return launch_taid(student, teacher, valid, t, one, None, temperature)


@torch.library.custom_op("fastkd::taid_cpu", mutates_args=("grad",), device_types="cpu")
def taid_cpu(
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor,
    t: torch.Tensor,
    scale: torch.Tensor,
    grad: torch.Tensor,
    temperature: float,
    student_softcap: float = 0.0,
    teacher_softcap: float = 0.0,
) -> torch.Tensor:
    """As ``fastkd::taid_fwd`` on the C++ divergence kernel's TAID mode: soft cross-entropy to the
    target softmax((1 − t)·b + t·a), mixed on the fp32 row buffer after the loads (reads 2·N·V
    elements once, writes N·V). ``t`` (fp32 []) is read on the host: a CPU tensor, no device sync.
    ``student_softcap`` / ``teacher_softcap`` as in ``fastkd::divergence_cpu`` (the fused-linear path).
    Rows with NaN or +inf in either raw input, or −inf everywhere, get loss NaN and a NaN gradient row
    at every t."""
    return run_cpu_kernel(
        student, teacher, valid, None, scale, grad, "taid", float(t), temperature, 0.0,
        (student_softcap, teacher_softcap),
    )  # fmt: skip


@torch.library.custom_op("fastkd::taid_loss_cpu", mutates_args=(), device_types="cpu")
def taid_loss_cpu(
    student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor, t: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Per-token TAID loss [N] (fp32) only, on the C++ kernel: one pass of reads, nothing written."""
    one = torch.ones((), dtype=torch.float32)
    return run_cpu_kernel(student, teacher, valid, None, one, None, "taid", float(t), temperature, 0.0)


def taid_rows(
    backend: str,
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor,
    t: torch.Tensor,
    scale: torch.Tensor,
    grad: torch.Tensor | None,
    temperature: float,
) -> torch.Tensor:
    """Per-token TAID loss [N] of the fused ``backend`` ("triton" or "cpu"); writes scale·∂loss/∂student
    into ``grad``, or, with ``grad`` None, only evaluates the loss."""
    if grad is None:
        op = taid_loss_cpu if backend == "cpu" else taid_loss
        return op(student, teacher, valid, t, temperature)
    op = taid_cpu if backend == "cpu" else taid_fwd
    return op(student, teacher, valid, t, scale, grad, temperature)


for _op in (taid_fwd, taid_loss, taid_cpu, taid_loss_cpu):
    _op.register_fake(row_losses)
