"""Fused Triton kernel for TAID, temporally adaptive interpolated distillation (arXiv 2501.16937).

With b = z/T (student), a = u/T (teacher) and the interpolation weight t loaded from a device pointer
(a schedule that moves t every step neither syncs nor recompiles), the target is
p_t = softmax(c), c = (1 − t)·b + t·a (the student side detached), and per row

    ℓ = −Σ p_t log q,   ∂ℓ/∂z = (q − p_t)/T,   q = softmax(b).

One program handles one row in vocabulary tiles of BLOCK, fp32 arithmetic:

- pass A reads student and teacher (2·V elements) for two online log-sum-exps, of b and of c; the
  teacher's own log-sum-exp is not needed, as softmax((1 − t)·log q + t·log p) = softmax(c): the
  per-row constants cancel;
- pass B reads both again, accumulates the loss and writes the gradient, already scaled by the
  reduction, in the student's dtype.

Traffic per row: 2V + 2V reads and V writes; per-row outputs are one fp32 loss, nothing else.
Without a gradient (WRITE_GRAD false: evaluation) pass B only sums the loss and writes nothing.

Non-finite rows: NaN or +inf in either row, or a row −inf everywhere, give loss NaN and a NaN
gradient row. Pass A decides it: lse_b is not finite for a bad student row; the teacher, which a
weight t = 0 drops from c, is probed by Σ 0·a over its non −inf entries (NaN exactly when a holds NaN
or +inf) and its running max (−inf for an all −inf row).
"""

import triton
import triton.language as tl

from .divergence import NAN, NEG_INF, POS_INF, SHARD_GRAD, SHARD_STATS, _fill_row, _load_tile, _online_lse


@triton.jit
def _mix(b, a, t):
    """c = (1 − t)·b + t·a, where a zero weight drops its side entirely (no 0·(−inf) = NaN)."""
    student_part = tl.where(t < 1.0, (1.0 - t) * b, 0.0)
    teacher_part = tl.where(t > 0.0, t * a, 0.0)
    return student_part + teacher_part


@triton.jit
def _taid_stats(s_row, t_row, V, inv_t, t, BLOCK: tl.constexpr):
    """Pass A: log-sum-exps of the student's b and of the interpolated c (padding is −inf in both), and
    whether the row is finite (module docstring)."""
    zero = tl.zeros((), tl.float32)
    low = tl.full((), NEG_INF, tl.float32)
    m_b, s_b, m_c, s_c, probe, m_a = low, zero, low, zero, zero, low
    for start in range(0, V, BLOCK):
        cols, inside, z, a, b = _load_tile(s_row, t_row, start, V, inv_t, 0.0, 0.0, 0, BLOCK)
        m_b, s_b = _online_lse(m_b, s_b, b)
        m_c, s_c = _online_lse(m_c, s_c, _mix(b, a, t))
        probe += tl.sum(tl.where(a == NEG_INF, 0.0, a) * 0.0, 0)
        m_a = tl.maximum(m_a, tl.max(a, 0))
    lse_b = m_b + tl.log(s_b)
    lse_c = m_c + tl.log(s_c)
    finite = (tl.abs(lse_b) < POS_INF) & (tl.abs(lse_c) < POS_INF) & (probe == 0.0) & (m_a > NEG_INF)
    return lse_b, lse_c, finite


@triton.jit
def taid_kernel(
    s_ptr,
    t_ptr,
    g_ptr,
    loss_ptr,
    valid_ptr,
    mix_ptr,
    scale_ptr,
    s_stride,
    t_stride,
    g_stride,
    V,
    inv_t,
    BLOCK: tl.constexpr,
    WRITE_GRAD: tl.constexpr = True,
):
    """Per-token loss −Σ p_t log q (fp32, unscaled) and, if WRITE_GRAD, scale·(q − p_t)/T to ``g_ptr``.

    ``mix_ptr`` holds t (fp32, 0-dim), ``scale_ptr`` the gradient's factor (1/N_valid for a mean);
    invalid rows get loss 0 and a zero gradient.
    """
    row = tl.program_id(0).to(tl.int64)
    s_row = s_ptr + row * s_stride
    t_row = t_ptr + row * t_stride
    g_row = g_ptr + row * g_stride
    loss = tl.zeros((), tl.float32)
    fill = tl.zeros((), tl.float32)
    if tl.load(valid_ptr + row) != 0:
        t = tl.load(mix_ptr)
        lse_b, lse_c, finite = _taid_stats(s_row, t_row, V, inv_t, t, BLOCK)
        if finite:
            scale = tl.load(scale_ptr)
            for start in range(0, V, BLOCK):
                cols, inside, z, a, b = _load_tile(s_row, t_row, start, V, inv_t, 0.0, 0.0, 0, BLOCK)
                lb = b - lse_b
                p = tl.exp(_mix(b, a, t) - lse_c)
                loss += tl.sum(tl.where(p > 0, -p * lb, 0.0), 0)
                if WRITE_GRAD:
                    grad = (tl.exp(lb) - p) * inv_t
                    tl.store(g_row + cols, (grad * scale).to(g_ptr.dtype.element_ty), mask=inside)
        else:
            loss += NAN
            fill += NAN
            if WRITE_GRAD:
                _fill_row(g_row, V, fill, BLOCK)
    elif WRITE_GRAD:
        _fill_row(g_row, V, fill, BLOCK)
    tl.store(loss_ptr + row, loss)


@triton.jit
def taid_shard_kernel(
    s_ptr,
    t_ptr,
    g_ptr,
    loss_ptr,
    stats_ptr,
    valid_ptr,
    mix_ptr,
    scale_ptr,
    s_stride,
    t_stride,
    g_stride,
    V,
    inv_t,
    PHASE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Vocabulary-parallel entry (fastkd.parallel): one phase of TAID on a slice of V logits.

    SHARD_STATS (pass A, reads 2V): writes the slice's log-sum-exps of b and of c into stats[row, 0:2].
    SHARD_GRAD (pass B, reads 2V, writes V): from the global ones, the slice's loss terms −Σ p_t log q
    and its gradient (q − p_t)/T·scale. ``stats`` is fp32 [N, 4].
    """
    row = tl.program_id(0).to(tl.int64)
    s_row = s_ptr + row * s_stride
    t_row = t_ptr + row * t_stride
    g_row = g_ptr + row * g_stride
    st_row = stats_ptr + row * 4
    loss = tl.zeros((), tl.float32)
    fill = tl.zeros((), tl.float32)
    if tl.load(valid_ptr + row) != 0:
        t = tl.load(mix_ptr)
        if PHASE == SHARD_STATS:  # a slice may be -inf everywhere (padding): only the global row counts
            lse_b, lse_c, finite = _taid_stats(s_row, t_row, V, inv_t, t, BLOCK)
            tl.store(st_row, lse_b)
            tl.store(st_row + 1, lse_c)
        else:
            lse_b = tl.load(st_row)
            lse_c = tl.load(st_row + 1)
            if (tl.abs(lse_b) < POS_INF) & (tl.abs(lse_c) < POS_INF):
                scale = tl.load(scale_ptr)
                for start in range(0, V, BLOCK):
                    cols, inside, z, a, b = _load_tile(s_row, t_row, start, V, inv_t, 0.0, 0.0, 0, BLOCK)
                    lb = b - lse_b
                    p = tl.exp(_mix(b, a, t) - lse_c)
                    loss += tl.sum(tl.where(p > 0, -p * lb, 0.0), 0)
                    grad = (tl.exp(lb) - p) * (inv_t * scale)
                    tl.store(g_row + cols, grad.to(g_ptr.dtype.element_ty), mask=inside)
            else:  # a non-finite global row: NaN loss and gradient
                loss += NAN
                fill += NAN
                _fill_row(g_row, V, fill, BLOCK)
    elif PHASE == SHARD_GRAD:
        _fill_row(g_row, V, fill, BLOCK)
    tl.store(loss_ptr + row, loss)
