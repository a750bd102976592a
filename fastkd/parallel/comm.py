"""The collectives of the vocabulary-parallel losses: every one moves O(rows) numbers.

- :func:`agree_on_layout`: one all-gather of three int64 per rank (slice size, rows, whether the
  rank's own input checks passed), so that each rank learns the others' slice sizes and an input
  error on any rank becomes an error on every rank instead of a hang in the next collective;
- :func:`global_logsumexp_`: two all-reduces (max, then sum of exponentials) of fp32 [N, k];
- :func:`all_reduce_sum_`: one all-reduce (row sums, loss terms).

Every call goes through ``torch.distributed`` by attribute, so tests can count the bytes moved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

from fastkd.boundary.parallel import ShardLayout

T = TypeVar("T")


def _rank_and_world(group: dist.ProcessGroup | None) -> tuple[int, int]:
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "the vocabulary-parallel losses need an initialised torch.distributed process group "
            "(torch.distributed.init_process_group, e.g. under torchrun)"
        )
    return dist.get_rank(group), dist.get_world_size(group)


def agree_on_layout(
    checks: Callable[[], T],
    local_vocab: int,
    rows: int,
    group: dist.ProcessGroup | None,
    device: torch.device,
) -> tuple[T, ShardLayout]:
    """Run this rank's input ``checks``, then exchange (V_r, rows, ok) with one all-gather.

    Returns the checks' result and the layout. If the checks raised here, their exception is re-raised
    (after the exchange, so the other ranks do not wait); if they raised on another rank, a
    RuntimeError names those ranks; if the ranks disagree on the number of rows, a ValueError says so.
    """
    rank, world = _rank_and_world(group)
    try:
        result, error = checks(), None
    except (TypeError, ValueError, RuntimeError) as caught:
        result, error = None, caught
    mine = torch.tensor([local_vocab, rows, error is None], dtype=torch.int64, device=device)
    gathered = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(gathered, mine, group=group)
    table = torch.stack(gathered).cpu().tolist()
    if error is not None:
        raise error
    failed = [r for r, (_, _, ok) in enumerate(table) if not ok]
    if failed:
        raise RuntimeError(
            f"a vocabulary-parallel loss failed its input checks on rank(s) {failed} of the group "
            f"(their errors say why); rank {rank} stops too"
        )
    all_rows = [n for _, n, _ in table]
    if len(set(all_rows)) > 1:
        raise ValueError(
            f"every rank must hold the same tokens (rows) of its vocabulary slice, got {all_rows} by rank"
        )
    return result, ShardLayout(rank=rank, sizes=tuple(v for v, _, _ in table))


def all_reduce_sum_(x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    """In place: the sum of ``x`` over the ranks (``x`` contiguous)."""
    dist.all_reduce(x, op=dist.ReduceOp.SUM, group=group)
    return x


def global_logsumexp_(lse: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    """In place: per entry, log Σ_r exp(lse_r) over the ranks' log-sum-exps (fp32, contiguous).

    Max first, then the sum of exp(lse_r − max): no overflow, and −inf where every slice is −inf.
    """
    top = lse.clone()
    dist.all_reduce(top, op=dist.ReduceOp.MAX, group=group)
    safe = top.masked_fill(top == float("-inf"), 0.0)
    lse.sub_(safe).exp_()
    all_reduce_sum_(lse, group)
    return lse.log_().add_(safe)
