"""The C++ CPU kernels of the divergence family, registered as the custom op ``fastkd::divergence_cpu``.

Same schema and contract as ``fastkd::divergence_fwd`` (the Triton op): per-token fp32 loss [N], and
scale·∂loss/∂student written into ``grad``. ``divergence`` may also be ``"taid"`` (``param`` = t): the
kernel's TAID mode, which the ops of :mod:`fastkd.ops.taid` call with t read from its tensor. The
kernels live in ``csrc/`` and build as ``fastkd._C``; rows run in parallel on
``torch.get_num_threads()`` OpenMP threads. Reads 2·N·V input elements once (each row then stays in
the thread's cache) and writes N·V.
"""

from __future__ import annotations

import torch

from fastkd.boundary.options import DIVERGENCES
from fastkd.ops.divergence import mixture_log_weights, row_losses


@torch.library.custom_op("fastkd::divergence_cpu", mutates_args=("grad",), device_types="cpu")
def divergence_cpu(
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
    student_softcap: float = 0.0,
    teacher_softcap: float = 0.0,
) -> torch.Tensor:
    """Per-token loss [N] (fp32) of ``divergence``; writes scale·∂loss/∂student into ``grad`` [N, V].

    Arguments as for ``fastkd::divergence_fwd`` (softcaps included); ``grad`` may be ``student`` itself.
    Rows with NaN or +inf (or −inf everywhere) get loss NaN and a NaN gradient row.
    """
    return run_cpu_kernel(
        student, teacher, valid, labels, scale, grad, divergence, param, temperature, hard_label_weight,
        (student_softcap, teacher_softcap),
    )  # fmt: skip


@torch.library.custom_op("fastkd::divergence_loss_cpu", mutates_args=(), device_types="cpu")
def divergence_loss_cpu(
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor,
    labels: torch.Tensor | None,
    divergence: str,
    param: float,
    temperature: float,
    hard_label_weight: float,
) -> torch.Tensor:
    """Per-token loss [N] (fp32) only, for evaluation: as ``fastkd::divergence_cpu``, writing nothing."""
    one = torch.ones((), dtype=torch.float32)
    return run_cpu_kernel(
        student, teacher, valid, labels, one, None, divergence, param, temperature, hard_label_weight
    )


def kernel_index(divergence: str) -> int:
    """The C++ kernel's index of ``divergence``: its place in DIVERGENCES, or one past them for "taid"."""
    return len(DIVERGENCES) if divergence == "taid" else DIVERGENCES.index(divergence)


def run_cpu_kernel(
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor,
    labels: torch.Tensor | None,
    scale: torch.Tensor,
    grad: torch.Tensor | None,
    divergence: str,
    param: float,
    temperature: float,
    hard_label_weight: float,
    softcaps: tuple[float, float] = (0.0, 0.0),
    phase: int = 0,
    stats: torch.Tensor | None = None,
) -> torch.Tensor:
    """The one call of ``fastkd._C.divergence_fwd_cpu``: the single-process ops above (phase 0) and the
    vocabulary-parallel phases of ``fastkd.ops.shard`` (``phase`` 1-3 reading / writing ``stats``)."""
    from fastkd import _C  # the extension is loaded on first use only

    lw1, lw2 = mixture_log_weights(divergence, param)
    return _C.divergence_fwd_cpu(
        student,
        teacher,
        valid,
        labels,
        scale,
        grad,
        kernel_index(divergence),
        param,
        temperature,
        hard_label_weight,
        lw1,
        lw2,
        *softcaps,
        phase,
        stats,
    )


divergence_cpu.register_fake(row_losses)
divergence_loss_cpu.register_fake(row_losses)
