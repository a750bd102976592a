"""Vocabulary-parallel boundary: the phases of the sliced kernels and the layout of the slices.

A vocabulary-parallel call (:mod:`fastkd.parallel`) runs the row kernels in phases on each rank's
contiguous slice [N, V_r] of the vocabulary, with per-row statistics in an fp32 [N, 4] tensor
between them (see :mod:`fastkd.ops.shard`):

- ``STATS``: the slice's log-sum-exps;
- ``ROW_SUM``: given the global log-sum-exps, the slice's c = Σ q·h;
- ``GRAD``: given the global statistics, the slice's loss terms and gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastkd.boundary.options import DIVERGENCES

STATS, ROW_SUM, GRAD = 1, 2, 3

# The divergences whose row sum c = Σ q·h is the constant −1 (no ROW_SUM phase, no collective for it).
CONSTANT_ROW_SUM: tuple[str, ...] = ("forward_kl", "soft_cross_entropy")
# Every divergence with a vocabulary-parallel version (akl's threshold search is distributed too).
PARALLEL_DIVERGENCES: tuple[str, ...] = (*DIVERGENCES, "taid")


@dataclass(frozen=True)
class ShardLayout:
    """Where this rank's slice lies: ``sizes[r]`` is rank r's V_r; the slices in rank order make V."""

    rank: int
    sizes: tuple[int, ...]

    @property
    def offset(self) -> int:
        return sum(self.sizes[: self.rank])

    @property
    def vocab(self) -> int:
        return sum(self.sizes)

    @property
    def local(self) -> int:
        return self.sizes[self.rank]
