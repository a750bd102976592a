"""Launcher of the fused TAID kernel, registered as the custom op ``fastkd::taid_fwd``."""

from __future__ import annotations

import torch

from fastkd.ops.divergence import launch_policy, row_losses


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


taid_fwd.register_fake(row_losses)
taid_loss.register_fake(row_losses)
