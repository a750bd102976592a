"""Vocabulary-parallel KD losses over torch.distributed, for tensor-parallel LM heads.

Each rank of a process group holds a contiguous slice of the vocabulary of the student's and the
teacher's logits; the losses return the full-vocabulary loss on every rank and the gradient w.r.t.
the local student slice, with O(rows) communication (a few all-reduces of per-row statistics), the
same row kernels as the single-process losses, and no collective in backward.
"""

from fastkd.boundary.parallel import PARALLEL_DIVERGENCES
from fastkd.parallel.functional import (
    vocab_parallel_fused_linear_kd,
    vocab_parallel_kd_loss,
    vocab_parallel_sparse_kl,
)

__all__ = [
    "PARALLEL_DIVERGENCES",
    "vocab_parallel_fused_linear_kd",
    "vocab_parallel_kd_loss",
    "vocab_parallel_sparse_kl",
]
