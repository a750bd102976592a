"""Multi-process runs (DDP under torchrun / accelerate): token means over all ranks, rank-0 writes.

Under DDP every rank computes the loss of its own micro-batch and the gradients are *averaged* over
the W ranks. For the step to equal one process with the W-fold batch, each rank's loss must be its
token sum divided by the global number of valid tokens, times W. HF's Trainer passes a global
``num_items_in_batch`` when ``average_tokens_across_devices`` is on (its default) and the batches
carry labels; otherwise :func:`global_token_count` all-reduces the local count (one int per step).

Commands that are not a Trainer (the teacher cache) join the launcher's group with
:func:`init_from_launcher` and split their work with :func:`rank_block`.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def world_size() -> int:
    """The number of processes of the default group (1 without torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0 of the default group, or the only process."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def global_token_count(
    args: Any, num_items_in_batch: Any, local_count: torch.Tensor, training: bool
) -> tuple[Any, float]:
    """(the divisor for the token means, the factor for the rank's loss) under W ranks.

    ``args`` are the TrainingArguments, ``local_count`` this micro-batch's valid tokens. One process:
    (``num_items_in_batch``, 1). W > 1 with HF's global count: (it, W). W > 1 otherwise, in training:
    the sum over the ranks of ``num_items_in_batch`` (or of ``local_count`` without one) and W; in
    evaluation (no collective there): unchanged, 1, i.e. the rank's own mean.
    """
    ranks = world_size()
    if ranks == 1:
        return num_items_in_batch, 1.0
    if num_items_in_batch is not None and getattr(args, "average_tokens_across_devices", False):
        return num_items_in_batch, float(ranks)
    if not training:
        return num_items_in_batch, 1.0
    local = local_count if num_items_in_batch is None else num_items_in_batch
    count = torch.as_tensor(local, dtype=torch.float32, device=local_count.device).detach().clone()
    dist.all_reduce(count)
    return count, float(ranks)


def valid_token_count(mask: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    """The valid positions of a micro-batch: ``mask.sum()``, or every row of ``logits`` [..., C]."""
    if mask is not None:
        return mask.sum()
    return torch.tensor(logits.shape[:-1].numel(), device=logits.device)


def sum_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over the ranks (itself in one process): a step's loss J from the ranks' parts,
    each already divided by the global token count, so that a schedule sees the same J everywhere."""
    if world_size() == 1:
        return value
    total = value.detach().to(torch.float32).clone()
    dist.all_reduce(total)
    return total


def init_from_launcher() -> None:
    """Join the process group a launcher (torchrun, accelerate) describes in WORLD_SIZE / RANK /
    MASTER_ADDR when a command that is not a Trainer (``fastkd lm cache-teacher``) runs under it:
    gloo on CPU, NCCL with CUDA. Nothing in one process or when the group exists."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def barrier() -> None:
    """Wait for every rank of the default group (nothing in one process)."""
    if world_size() > 1:
        dist.barrier()


def rank_block(count: int) -> range:
    """This rank's contiguous share of ``count`` items (rank order = item order; sizes differ by ≤ 1)."""
    ranks, rank = world_size(), dist.get_rank() if world_size() > 1 else 0
    return range(rank * count // ranks, (rank + 1) * count // ranks)


def rank_file_prefix(stem: str) -> str:
    """``stem-`` in one process, ``stem-r<rank>-`` under W ranks (files of different ranks never clash)."""
    return f"{stem}-" if world_size() == 1 else f"{stem}-r{dist.get_rank():03d}-"


def gather_in_rank_order(items: list[Any]) -> list[Any]:
    """Every rank's ``items`` (picklable), concatenated in rank order, on every rank."""
    if world_size() == 1:
        return list(items)
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, list(items))
    return [item for part in parts for item in part]
