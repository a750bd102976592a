"""The Hopper cluster kernels of the divergence family, as the custom op ``fastkd::divergence_cuda``.

Same schema and contract as ``fastkd::divergence_fwd`` (the Triton op): per-token fp32 loss [N], and
scale·∂loss/∂student written into ``grad``. The kernels live in ``csrc/cuda/`` and build into
``fastkd._C`` when torch has CUDA and nvcc is found. One thread-block cluster holds one row in shared
memory (launch plan: :mod:`fastkd.ops.cuda_plan`), so each row is read once from HBM: 2·N·V elements
read, N·V written. Rows that do not fit a cluster, and teachers of another dtype than the student,
run the Triton kernel instead (:func:`divergence_op_for`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fastkd.boundary.options import DIVERGENCES
from fastkd.ops.cuda_plan import cluster_plan
from fastkd.ops.divergence import divergence_fwd, mixture_log_weights, row_losses


@torch.library.custom_op("fastkd::divergence_cuda", mutates_args=("grad",), device_types="cuda")
def divergence_cuda(
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor,
    labels: torch.Tensor | None,
    scale: torch.Tensor,
    grad: torch.Tensor,
    divergence: str,
    param: float,
    temperature: float,
    hard_label_weight: float,
) -> torch.Tensor:
    """Per-token loss [N] (fp32) of ``divergence``; writes scale·∂loss/∂student into ``grad`` [N, V].

    Arguments as for ``fastkd::divergence_fwd``; ``grad`` may be ``student`` itself. Raises if the
    rows do not fit a cluster (callers take :func:`divergence_op_for`).
    """
    from fastkd import _C  # the extension is loaded on first use only

    plan = cluster_plan(student, teacher)
    if plan is None:
        raise ValueError(
            f"rows of V={student.shape[-1]} {student.dtype} (teacher {teacher.dtype}) do not fit the "
            "cluster kernel; fastkd.ops.divergence_cuda.divergence_op_for picks the Triton kernel for them"
        )
    lw1, lw2 = mixture_log_weights(divergence, param)
    return _C.divergence_fwd_cuda(
        student,
        teacher,
        valid,
        labels,
        scale.to(torch.float32),
        grad,
        DIVERGENCES.index(divergence),
        param,
        temperature,
        hard_label_weight,
        lw1,
        lw2,
        plan.cluster,
        plan.slice,
        plan.smem_bytes,
    )


divergence_cuda.register_fake(row_losses)


def divergence_op_for(student: torch.Tensor, teacher: torch.Tensor) -> Callable[..., torch.Tensor]:
    """The op of ``backend="cuda"`` for these inputs: the cluster kernel when a row fits its plan, else
    the Triton kernel (``fastkd::divergence_fwd``)."""
    return divergence_cuda if cluster_plan(student, teacher) is not None else divergence_fwd
