"""Distillation from a sparse (top-k) teacher, as offline teacher caches store it.

:func:`teacher_topk` writes the cache format; :func:`sparse_kl` is the forward KL from it. Options as
in the divergence family (``labels``/``ignore_index``, ``mask``, ``temperature``, ``reduction``,
``num_items_in_batch``, ``backend``); the loss is fp32 and the student's gradient has its dtype.
"""

from __future__ import annotations

import torch

from fastkd.backends import resolve
from fastkd.boundary.inputs import _check_logits, check_finite_inputs
from fastkd.boundary.options import _check_real
from fastkd.boundary.sparse import SparseOptions, prepare_sparse
from fastkd.functions.sparse import sparse_kl_fused
from fastkd.reference import sparse as reference_sparse

# Rows of teacher logits turned into fp32 at once by teacher_topk (bounds its temporary memory).
TOPK_CHUNK_ELEMENTS = 1 << 26


def teacher_topk(
    teacher_logits: torch.Tensor, k: int, *, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most probable tokens of the teacher: (indices int64 [..., k], log-probs fp32 [..., k]).

    Log-probabilities are log softmax(u/T) over the full vocabulary (T = ``temperature``, default 1:
    :func:`sparse_kl` expects T = 1 and applies its own temperature), sorted descending. This is the
    offline-cache format of :func:`sparse_kl`. Memory: one fp32 copy of at most 2^26 logits at a time.
    """
    teacher = _check_logits("teacher_logits", teacher_logits).detach()
    vocab = teacher.shape[-1]
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if not 1 <= k <= vocab:
        raise ValueError(f"k must lie in [1, V = {vocab}], got {k}")
    _check_real("temperature", temperature)
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    values, indices = teacher.topk(k, dim=-1, sorted=True)
    rows = teacher.reshape(-1, vocab)
    chunk = max(1, TOPK_CHUNK_ELEMENTS // vocab)
    parts = [torch.logsumexp(part.to(torch.float32) / temperature, dim=-1) for part in rows.split(chunk)]
    lse = torch.cat(parts) if parts else rows.new_empty(0, dtype=torch.float32)
    return indices, values.to(torch.float32) / temperature - lse.reshape(*teacher.shape[:-1], 1)


def sparse_kl(
    student_logits: torch.Tensor,
    teacher_topk_indices: torch.Tensor,
    teacher_topk_logprobs: torch.Tensor,
    *,
    renormalize: bool = True,
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    ignore_index: int = -100,
    temperature: float = 1.0,
    reduction: str = "mean",
    num_items_in_batch: int | torch.Tensor | None = None,
    backend: str = "auto",
    check_finite: bool | None = None,
) -> torch.Tensor:
    """Forward KL(p‖q) from a sparse teacher: k (index, log-probability) slots per token.

    Student logits z [..., V] (q = softmax(z/T) over the full vocabulary); teacher indices S int64 or
    int32 [..., k] (unique per token, in [0, V)) and log-probabilities l [..., k] at T = 1 (≤ 0; -inf
    marks a padding slot of probability 0), as :func:`teacher_topk` writes them.

    - ``renormalize=True`` (default): the teacher's top-k mass is renormalised to 1, tempered:
      p̂_k = softmax_S(l/T)_k (exactly the tempered teacher softmax(u/T) restricted to S and
      renormalised), and ℓ = Σ_k p̂_k (log p̂_k − log q_k). Gradient (q − p̂)/T, p̂ = 0 off S.
    - ``renormalize=False``: the teacher's remaining mass p_rest = 1 − Σ_k e^{l_k} is one more bucket,
      compared with the student's remaining mass q_rest = Σ_{j∉S} q_j (log q_rest from a log-sum-exp over
      the columns outside S, never log(1 − Σ q_k)): ℓ = Σ_k p̃_k (log p̃_k − log q_k) + p̃_rest (log p̃_rest
      − log q_rest). Temperature tempers the (k + 1)-bucket teacher as a distribution,
      p̃ ∝ (e^{l_1}, ..., e^{l_k}, p_rest)^{1/T}: the cache cannot say how the rest mass is spread, so the
      rest is tempered as one atom (exact at T = 1). With k = V the rest bucket is empty by definition
      (the stored deficit is rounding) and the result equals ``renormalize=True``; a stored mass ≥ 1 means
      p_rest = 0.

    A token whose k slots all hold -inf has loss 0 with ``renormalize=True`` (nothing to distil). A
    student row with NaN or +inf, or −inf everywhere, gives loss NaN and a NaN gradient row (teacher
    slots with NaN are an error); ``check_finite`` as in :func:`fastkd.losses.kd_loss`. ``backend``:
    "auto" (default), "triton", "cpu" (the C++ kernel of ``csrc/sparse_cpu.cpp``) or "torch". No T²
    factor. Sparse-teacher KD as in offline logit caches, e.g. arXiv 2503.16870 ("Sparse Logit Sampling").
    """
    options = SparseOptions(
        renormalize=renormalize, temperature=temperature, reduction=reduction, ignore_index=ignore_index
    )
    flat = prepare_sparse(
        student_logits, teacher_topk_indices, teacher_topk_logprobs, options, labels, mask, num_items_in_batch
    )
    check_finite_inputs(check_finite, flat, temperature, teacher=False)
    name = resolve(backend, flat.student, fused=("triton", "cpu"))
    if name == "torch":
        return reference_sparse.sparse_kl_loss(flat, options)
    return sparse_kl_fused(flat, options, name)
