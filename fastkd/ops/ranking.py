"""Launcher of RLKD's top-k union kernel, registered as the custom op ``fastkd::topk_union``."""

from __future__ import annotations

from typing import NamedTuple

import torch

# The fused kernel keeps each running top-k in registers and compares the two sets pairwise (KP² keys):
# k up to 32 stays spill-free; larger k runs on the ``torch`` backend.
MAX_FUSED_K = 32


class RankLaunchConfig(NamedTuple):
    block: int
    slots: int
    warps: int


def launch_policy(vocab: int, k: int) -> RankLaunchConfig:
    """Tiles of 128 for class counts (4 warps), 1024 otherwise with 8 warps (4 int64 keys a thread per
    input, no spills up to KP = 32 on sm_80/sm_90); KP = the next power of two ≥ k (at least 2)."""
    slots = max(2, 1 << (k - 1).bit_length())
    return RankLaunchConfig(128, slots, 4) if vocab <= 128 else RankLaunchConfig(1024, slots, 8)


@torch.library.custom_op("fastkd::topk_union", mutates_args=(), device_types=("cuda", "cpu"))
def topk_union(
    student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(index int64 [N, 2k], a fp32 [N, 2k], b fp32 [N, 2k]) for [N, V] logits with unit stride along V.

    index[:, :k] are the teacher's top-k columns, index[:, k:] the student's top-k columns that are not
    among them, -1 elsewhere (duplicates, invalid rows); a / b are the teacher / student logits there
    (0 at -1). Ties go to the lower column. Reads 2·N·V elements, writes 6·N·k.
    """
    from fastkd.kernels.ranking import topk_union_kernel  # triton is imported on first launch only

    rows, vocab = student.shape
    index = torch.empty(rows, 2 * k, dtype=torch.int64, device=student.device)
    a = torch.empty(rows, 2 * k, dtype=torch.float32, device=student.device)
    b = torch.empty_like(a)
    if rows == 0:
        return index, a, b
    config = launch_policy(vocab, k)
    topk_union_kernel[(rows,)](
        student,
        teacher,
        index,
        a,
        b,
        valid.view(torch.uint8),
        student.stride(0),
        teacher.stride(0),
        vocab,
        k,
        KP=config.slots,
        BLOCK=config.block,
        num_warps=config.warps,
    )
    return index, a, b


@topk_union.register_fake
def _topk_union_fake(
    student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = student.shape[0]
    index = student.new_empty(rows, 2 * k, dtype=torch.int64)
    values = student.new_empty(rows, 2 * k, dtype=torch.float32)
    return index, values, torch.empty_like(values)
