"""Launcher of the fused divergence kernel, registered as the custom op ``fastkd::divergence_fwd``."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from fastkd.boundary.options import DIVERGENCES


class LaunchConfig(NamedTuple):
    block: int
    search_block: int
    warps: int


def launch_policy(vocab: int, capped: bool = False) -> LaunchConfig:
    """Tile sizes and warps for a row of ``vocab`` logits: one of three configurations, so that few
    kernels compile. 128-wide tiles for class counts, 1024 for small vocabularies, 2048 with 8 warps
    for real ones (8 elements a thread, at most ~92 registers on sm_90, so two or three blocks share
    an SM). AKL's threshold search compares a [search_block, 16] tile: 16 values a thread.

    ``capped`` (a softcap folded into the loads: the fused-linear path) has one configuration for any
    vocabulary, 1024-wide tiles with 8 warps: 4 elements a thread, so the tanh work fits without
    spills (at most 80 registers on sm_80/sm_90, three blocks an SM), at twice the tiles (and
    per-tile reductions) of the 2048 tile."""
    if capped:
        return LaunchConfig(1024, 128, 8)
    if vocab <= 128:
        return LaunchConfig(128, 128, 4)
    if vocab <= 1024:
        return LaunchConfig(1024, 128, 4)
    return LaunchConfig(2048, 256, 8)


def row_losses(student: torch.Tensor, *args: object) -> torch.Tensor:
    """An uninitialised fp32 [N] for the per-row losses of ``student`` [N, V]; also the fake (meta)
    implementation of every op that returns only those losses."""
    return student.new_empty(student.shape[0], dtype=torch.float32)


def mixture_log_weights(divergence: str, param: float) -> tuple[float, float]:
    """log of the (teacher, student) weights of the mixture m in jsd and the skew KLs (-inf for 0)."""
    teacher_weight = {"jsd": param, "skew_kl": param, "skew_reverse_kl": 1.0 - param}.get(divergence, 0.5)
    return tuple(math.log(w) if w > 0 else float("-inf") for w in (teacher_weight, 1.0 - teacher_weight))


def launch_divergence(
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
) -> torch.Tensor:
    """Run the Triton kernel: per-token loss [N]; writes the gradient into ``grad`` unless it is None.
    ``softcaps`` (student, teacher; 0 = none) are applied as the kernel loads the logits."""
    from fastkd.kernels.divergence import divergence_kernel  # triton is imported on first launch only

    rows, vocab = student.shape
    loss = row_losses(student)
    if rows == 0:
        return loss
    caps = (softcaps[0] > 0.0) + 2 * (softcaps[1] > 0.0)
    config = launch_policy(vocab, capped=caps > 0)
    lw1, lw2 = mixture_log_weights(divergence, param)
    hard = hard_label_weight > 0.0
    target = student if grad is None else grad
    divergence_kernel[(rows,)](
        student,
        teacher,
        target,
        loss,
        valid.view(torch.uint8),
        labels if hard else valid,
        scale,
        student.stride(0),
        teacher.stride(0),
        target.stride(0),
        vocab,
        1.0 / temperature,
        param,
        lw1,
        lw2,
        hard_label_weight,
        *softcaps,
        DIV=DIVERGENCES.index(divergence),
        HARD=hard,
        BLOCK=config.block,
        SEARCH_BLOCK=config.search_block,
        WRITE_GRAD=grad is not None,
        CAPS=caps,
        num_warps=config.warps,
    )
    return loss


@torch.library.custom_op("fastkd::divergence_fwd", mutates_args=("grad",), device_types=("cuda", "cpu"))
def divergence_fwd(
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

    ``student``, ``teacher``, ``grad``: [N, V] with unit stride along V; ``valid``: bool [N];
    ``labels``: int64 [N] when ``hard_label_weight`` > 0; ``scale``: fp32 [] (1/N_valid for a mean).
    ``grad`` may be ``student`` itself (in-place gradient). Reads 2·N·V elements per pass (two passes
    for forward/reverse KL and soft CE, three for the rest, plus AKL's teacher-only search) and
    writes N·V. Rows with NaN or +inf (or −inf everywhere) get loss NaN and a NaN gradient row.
    ``student_softcap`` / ``teacher_softcap`` c > 0 make the kernel read c·tanh(x/c) for that side's
    logits x and chain the student's gradient through it (the fused-linear path); 0 reads them as is.
    """
    return launch_divergence(
        student, teacher, valid, labels, scale, grad, divergence, param, temperature, hard_label_weight,
        (student_softcap, teacher_softcap),
    )  # fmt: skip


@torch.library.custom_op("fastkd::divergence_loss", mutates_args=(), device_types=("cuda", "cpu"))
def divergence_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor,
    labels: torch.Tensor | None,
    divergence: str,
    param: float,
    temperature: float,
    hard_label_weight: float,
) -> torch.Tensor:
    """Per-token loss [N] (fp32) of ``divergence`` only, for evaluation: no gradient is written.

    Forward KL, soft CE and reverse KL read 2·N·V elements once; the others as ``divergence_fwd``.
    """
    one = torch.ones((), dtype=torch.float32, device=student.device)
    return launch_divergence(
        student, teacher, valid, labels, one, None, divergence, param, temperature, hard_label_weight
    )


divergence_fwd.register_fake(row_losses)
divergence_loss.register_fake(row_losses)
