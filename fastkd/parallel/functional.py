"""The public vocabulary-parallel losses (see :mod:`fastkd.parallel`)."""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.distributed as dist

from fastkd.backends import resolve
from fastkd.boundary.fused_linear import FusedLinearOptions, LogitTransform, prepare_fused_linear
from fastkd.boundary.inputs import _check_logits, check_label_range, prepare
from fastkd.boundary.options import DivergenceOptions
from fastkd.boundary.parallel import PARALLEL_DIVERGENCES, ShardLayout
from fastkd.boundary.sparse import SparseOptions, prepare_sparse
from fastkd.functional.divergence import divergence_options
from fastkd.functional.fused_linear import _gemm_dtype
from fastkd.functional.taid import interpolation_weight
from fastkd.parallel.comm import agree_on_layout
from fastkd.parallel.divergence import ShardCall, VocabParallelFunction
from fastkd.parallel.fused_linear import FusedShardCall, VocabParallelFusedLinearFunction, local_options
from fastkd.parallel.sparse import SparseShardCall

# The keyword options that make a divergence's DivergenceOptions (with the family parameters).
SETTINGS = ("beta", "alpha", "mu", "temperature", "reduction", "ignore_index", "hard_label_weight")


def _extent(x: object) -> tuple[int, int, torch.device]:
    """(rows, last dimension, device) of a [..., D] tensor, for the layout exchange (which runs even when
    ``x`` is not a tensor, so that the other ranks learn of the error)."""
    shape = tuple(getattr(x, "shape", ())) or (0,)
    return math.prod(shape[:-1]), shape[-1], getattr(x, "device", torch.device("cpu"))


def _local_labels(
    options: DivergenceOptions, labels: torch.Tensor | None, valid: torch.Tensor, layout: ShardLayout
) -> torch.Tensor | None:
    """Slice-local label ids for the hard-label term (global ids checked against the global V)."""
    if not options.needs_labels:
        return None
    check_label_range(labels, valid, layout.vocab)
    return labels - layout.offset


def _checked_options(divergence: object, t: object, options: dict) -> DivergenceOptions:
    if divergence not in PARALLEL_DIVERGENCES:
        raise ValueError(
            f"divergence {divergence!r} has no vocabulary-parallel version; supported: "
            f"{list(PARALLEL_DIVERGENCES)}"
        )
    if divergence != "taid":
        if t is not None:
            raise TypeError(f"divergence {divergence!r} takes no interpolation weight t (only 'taid' does)")
        return divergence_options(divergence, **options)
    if t is None:
        raise TypeError("divergence 'taid' needs its interpolation weight t (a float or 0-dim tensor)")
    extra = [k for k in ("beta", "alpha", "mu") if options.get(k) is not None]
    if extra or options.get("hard_label_weight", 0.0) != 0.0:
        raise TypeError(f"divergence 'taid' takes no {extra or ['hard_label_weight']}")
    settings = {k: options[k] for k in ("temperature", "reduction", "ignore_index")}
    return DivergenceOptions.build("soft_cross_entropy", **settings)


def vocab_parallel_kd_loss(
    student_logits_shard: torch.Tensor,
    teacher_logits_shard: torch.Tensor,
    divergence: str = "forward_kl",
    *,
    group: dist.ProcessGroup | None = None,
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    ignore_index: int = -100,
    temperature: float = 1.0,
    reduction: str = "mean",
    num_items_in_batch: int | torch.Tensor | None = None,
    hard_label_weight: float = 0.0,
    backend: str = "auto",
    beta: float | None = None,
    alpha: float | None = None,
    mu: float | None = None,
    t: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """KD loss over a vocabulary split across the ranks of ``group`` (default: the world).

    Rank r holds the contiguous slice [..., V_r] of both models' logits (Megatron's column-parallel LM
    head); the slices in rank order make the vocabulary, and V_r may differ between ranks. Returns, on
    every rank, the loss of :func:`fastkd.losses.kd_loss` on the full logits (fp32), and backward gives
    the gradient w.r.t. this rank's student slice (in its dtype).

    ``divergence``: forward_kl, soft_cross_entropy, reverse_kl, jsd (``beta``), skew_kl /
    skew_reverse_kl (``alpha``), tvd, or ``"taid"`` (with its weight ``t``, as
    :func:`fastkd.losses.taid`); akl (``mu``) runs its head-threshold search over the ranks, with
    PyTorch for the local work (about 14 collectives of O(rows) data, see :mod:`fastkd.parallel.akl`).
    Options as for ``kd_loss``: ``labels`` hold global vocabulary ids (the label's logit lives on one rank),
    ``labels``, ``mask`` and ``num_items_in_batch`` are the same on every rank. ``backend``: auto, cpu
    (C++), triton or torch. Communication per call: 3-4 all-reduces, at most 8 fp32 per row in all,
    and one all-gather of 3 int64 per rank; none in backward. An input error on one rank raises on every rank.
    """
    options_in = {name: value for name, value in locals().items() if name in SETTINGS}

    def checks() -> tuple:
        options = _checked_options(divergence, t, options_in)
        local = replace(options, hard_label_weight=0.0)  # labels are global ids: range checked below
        flat = prepare(student_logits_shard, teacher_logits_shard, local, labels, mask, num_items_in_batch)
        if options.needs_labels and flat.labels is None:
            raise ValueError(f"hard_label_weight={hard_label_weight} needs labels, got labels=None")
        fused = () if divergence == "akl" else ("triton", "cpu")
        name = resolve(backend, flat.student, fused=fused)
        weight = interpolation_weight(t, flat.student) if divergence == "taid" else None
        return options, flat, name, weight

    rows, local_vocab, device = _extent(student_logits_shard)
    (options, flat, name, weight), layout = agree_on_layout(checks, local_vocab, rows, group, device)
    local_labels = _local_labels(options, flat.labels, flat.valid, layout)
    call = ShardCall(flat, local_labels, options, weight, layout, group, name)
    return VocabParallelFunction.apply(flat.student, call)


def vocab_parallel_fused_linear_kd(
    student_hidden: torch.Tensor,
    student_weight_shard: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight_shard: torch.Tensor,
    divergence: str = "forward_kl",
    *,
    group: dist.ProcessGroup | None = None,
    student_bias_shard: torch.Tensor | None = None,
    teacher_bias_shard: torch.Tensor | None = None,
    beta: float | None = None,
    alpha: float | None = None,
    mu: float | None = None,
    t: float | torch.Tensor | None = None,
    student_logit_scale: float = 1.0,
    teacher_logit_scale: float = 1.0,
    student_softcap: float | None = None,
    teacher_softcap: float | None = None,
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    ignore_index: int = -100,
    temperature: float = 1.0,
    reduction: str = "mean",
    num_items_in_batch: int | torch.Tensor | None = None,
    hard_label_weight: float = 0.0,
    chunk_size: int | None = None,
    grad_weight_dtype: torch.dtype = torch.float32,
    backend: str = "auto",
) -> torch.Tensor:
    """:func:`fastkd.losses.fused_linear_kd` with column-parallel LM heads (Megatron's layout).

    ``student_hidden`` [..., H_s] and ``teacher_hidden`` [..., H_t] are the same on every rank of
    ``group``; ``*_weight_shard`` [V_r, H] (and ``*_bias_shard`` [V_r]) are this rank's contiguous
    rows of the LM heads, in rank order (V_r may differ between ranks, equal for the two models).
    Returns the full-vocabulary loss on every rank; backward gives the gradient of this rank's weight
    (and bias) slice and the gradient of ``student_hidden`` summed over the group (the full one, on
    every rank). Divergences and options as for :func:`vocab_parallel_kd_loss` and
    ``fused_linear_kd`` (logit scales, softcaps, chunk_size, grad_weight_dtype); reduction "mean" or
    "sum". Communication per chunk: the O(chunk) all-reduces of the logit-level loss; per call one
    all-reduce of the hidden gradient [N, H_s] (in the forward), none in backward.
    """
    settings = {name: value for name, value in locals().items() if name in SETTINGS}

    def checks() -> tuple:
        if reduction not in ("mean", "sum"):
            raise ValueError(
                f"vocab_parallel_fused_linear_kd takes reduction 'mean' or 'sum', got {reduction!r}"
            )
        options = FusedLinearOptions(
            loss=_checked_options(divergence, t, settings),
            source="hidden",
            taid=divergence == "taid",
            student=LogitTransform.build("student", student_logit_scale, student_softcap),
            teacher=LogitTransform.build("teacher", teacher_logit_scale, teacher_softcap),
            chunk_size=chunk_size,
            grad_weight_dtype=grad_weight_dtype,
        )
        teacher = dict.fromkeys(("teacher_logits", "teacher_topk_indices", "teacher_topk_logprobs"))
        teacher.update(teacher_hidden=teacher_hidden, teacher_weight=teacher_weight_shard)
        teacher["teacher_bias"] = teacher_bias_shard
        student = (student_hidden, student_weight_shard, student_bias_shard)
        flat = prepare_fused_linear(
            student, teacher, local_options(options), labels, mask, num_items_in_batch
        )
        name = resolve(backend, flat.hidden, fused=("triton", "cpu"))
        weight = interpolation_weight(t, flat.hidden) if divergence == "taid" else None
        return options, flat, name, weight

    rows, _, device = _extent(student_hidden)
    local_vocab = (tuple(getattr(student_weight_shard, "shape", ())) or (0,))[0]
    (options, flat, name, weight), layout = agree_on_layout(checks, local_vocab, rows, group, device)
    local_labels = _local_labels(options.loss, flat.labels, flat.valid, layout)
    call = FusedShardCall(flat, options, local_labels, weight, layout, group, name, _gemm_dtype(flat.hidden))
    return VocabParallelFusedLinearFunction.apply(flat.hidden, flat.weight, flat.bias, call)


def vocab_parallel_sparse_kl(
    student_logits_shard: torch.Tensor,
    teacher_topk_indices: torch.Tensor,
    teacher_topk_logprobs: torch.Tensor,
    *,
    group: dist.ProcessGroup | None = None,
    renormalize: bool = True,
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    ignore_index: int = -100,
    temperature: float = 1.0,
    reduction: str = "mean",
    num_items_in_batch: int | torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """:func:`fastkd.losses.sparse_kl` with the student's logits split over the vocabulary.

    ``student_logits_shard`` [..., V_r] is this rank's contiguous slice (rank order, uneven sizes
    allowed); ``teacher_topk_indices`` [..., k] hold global vocabulary ids and, with the log-probs,
    labels and mask, are the same on every rank. Returns the full-vocabulary loss on every rank;
    backward gives the gradient of the local slice. Communication per call: one all-gather of 3 int64
    per rank, three all-reduces of at most 2 fp32 per row; none in backward. ``backend``: auto,
    triton or cpu (the sparse kernel's sliced entry) or torch.
    """

    def checks() -> tuple:
        student = _check_logits("student_logits", student_logits_shard)
        options = SparseOptions(renormalize, temperature, reduction, ignore_index)
        return options, resolve(backend, student, fused=("triton", "cpu"))

    rows, local_vocab, device = _extent(student_logits_shard)
    (options, name), layout = agree_on_layout(checks, local_vocab, rows, group, device)
    # The teacher is checked against the global vocabulary: a stand-in of the full logits' shape.
    like = torch.empty((), device=device).expand(*student_logits_shard.shape[:-1], layout.vocab)
    flat = prepare_sparse(
        like, teacher_topk_indices, teacher_topk_logprobs, options, labels, mask, num_items_in_batch
    )
    flat = replace(flat, student=student_logits_shard.reshape(-1, local_vocab))
    return VocabParallelFunction.apply(flat.student, SparseShardCall(flat, options, layout, group, name))
