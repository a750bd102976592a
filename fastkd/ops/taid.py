"""Launcher of the fused TAID kernel, registered as the custom op ``fastkd::taid_fwd``."""

from __future__ import annotations

import torch

from fastkd.ops.divergence import launch_policy, row_losses


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
    tile widths and warps suit a kernel with the same loads and fewer registers.
    """
    from fastkd.kernels.taid import taid_kernel  # triton is imported on first launch only

    rows, vocab = student.shape
    loss = row_losses(student)
    if rows == 0:
        return loss
    config = launch_policy(vocab)
    taid_kernel[(rows,)](
        student,
        teacher,
        grad,
        loss,
        valid.view(torch.uint8),
        t,
        scale,
        student.stride(0),
        teacher.stride(0),
        grad.stride(0),
        vocab,
        1.0 / temperature,
        BLOCK=config.block,
        num_warps=config.warps,
    )
    return loss


taid_fwd.register_fake(row_losses)
