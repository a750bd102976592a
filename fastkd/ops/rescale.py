"""In-place ``grad *= grad_output`` for the fused losses' backward, registered as ``fastkd::rescale_``."""

from __future__ import annotations

import torch

RESCALE_BLOCK, RESCALE_WARPS = 2048, 4


def launch_rescale(grad: torch.Tensor, scale: torch.Tensor) -> None:
    """The Triton kernel over ``grad`` [N, V] (unit stride along V); ``scale`` fp32, [] or [N]."""
    from fastkd.kernels.rescale import rescale_kernel  # triton is imported on first launch only

    rows, vocab = grad.shape
    if rows == 0 or vocab == 0:
        return
    grid = (rows, -(-vocab // RESCALE_BLOCK))
    scale_stride = 0 if scale.dim() == 0 else scale.stride(0)
    rescale_kernel[grid](
        grad, scale, grad.stride(0), scale_stride, vocab, BLOCK=RESCALE_BLOCK, num_warps=RESCALE_WARPS
    )


@torch.library.custom_op("fastkd::rescale_", mutates_args=("grad",), device_types=("cuda", "cpu"))
def rescale_(grad: torch.Tensor, scale: torch.Tensor) -> None:
    """``grad`` [N, V] *= ``scale`` (fp32, [] for a reduced loss or [N] per row), skipping the pass
    where the factor is 1. On CUDA the kernel decides per row on the device (no host sync); on CPU
    the factors are host memory already, so one comparison decides."""
    if grad.is_cuda:
        launch_rescale(grad, scale)
    elif not bool((scale == 1.0).all()):
        grad.mul_(scale if scale.dim() == 0 else scale[:, None])


@rescale_.register_fake
def _rescale_fake(grad: torch.Tensor, scale: torch.Tensor) -> None:
    return None
