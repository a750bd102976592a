"""Fused Triton kernel of the sparse (top-k) teacher KL: one program per token row.

The teacher of row n is k (index, log-probability) slots plus, without renormalisation, one "rest"
bucket (its log-mass precomputed per row by the launcher). With a = teacher log-probs / T over the
buckets and b = z/T the tempered student logits, the program

- pass A reads the student row (V elements) for an online log-sum-exp: over the whole row, or, with
  a rest bucket, over the columns outside the support only (membership by a merge walk over the
  ascending sorted indices, one [BLOCK] comparison per support index), so that
  log q_rest = lse_rest − lse_all never comes from a cancelling 1 − Σ q_k;
- gathers the k student logits and teacher log-probs (k reads each) for their log-sum-exps, and with
  a rest bucket lse_all = logaddexp(lse_rest, lse of the gathered student logits);
- pass C reads the student row again and writes the dense gradient (q_j − p̃_rest·q_j/q_rest)/T
  (no rest term without a rest bucket), then, after a barrier, overwrites the k support columns
  with (q_k − p̃_k)/T, all scaled by the reduction's factor, in the student's dtype, and adds the
  slots' loss terms Σ p̃_k (log p̃_k − log q_k) to the rest bucket's.

Traffic per row: 2·V reads + V writes + O(k); no [N, V] buffer besides the gradient.

A student row with NaN or +inf, or −inf everywhere, has a non-finite lse_all (NaN reaches the sums):
its loss and gradient row are NaN. (Teacher slots are checked at the boundary.)
"""

import triton
import triton.language as tl

from .divergence import NAN, NEG_INF, POS_INF, SHARD_GRAD, SHARD_STATS, _fill_row, _online_lse


@triton.jit
def _safe(x):
    """-inf -> 0, so that x − x and exp(y − x) stay free of NaN."""
    return tl.where(x == NEG_INF, 0.0, x)


@triton.jit
def _logaddexp(x, y):
    top = _safe(tl.maximum(x, y))
    return top + tl.log(tl.exp(x - top) + tl.exp(y - top))


@triton.jit
def _support_member(cols, idx_row, pos, next_id, k, end):
    """Which columns of the tile [.., end) hold a support index: a merge walk over the ascending indices
    from slot ``pos`` (holding ``next_id``) on, one [BLOCK] comparison per index in the tile. Returns the
    mask and the walk's new position (slots past k read as 2^31 − 1, beyond every tile)."""
    member = cols < 0
    while next_id < end:
        member = member | (cols == next_id)
        pos += 1
        next_id = tl.load(idx_row + pos, mask=pos < k, other=2147483647)
    return member, pos, next_id


@triton.jit
def _student_lse(s_row, idx_row, V, k, inv_t, REST: tl.constexpr, BLOCK: tl.constexpr):
    """Pass A: log-sum-exp of b = z/T over the row, or over the columns outside the support if REST."""
    m = tl.full((), NEG_INF, tl.float32)
    s = tl.zeros((), tl.float32)
    pos = tl.zeros((), tl.int64)
    next_id = tl.load(idx_row)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        b = tl.load(s_row + cols, mask=cols < V, other=NEG_INF).to(tl.float32) * inv_t
        if REST:
            member, pos, next_id = _support_member(cols, idx_row, pos, next_id, k, start + BLOCK)
            b = tl.where(member, NEG_INF, b)
        m, s = _online_lse(m, s, b)
    return m + tl.log(s)


@triton.jit
def _load_slots(s_row, idx_row, lp_row, start, k, inv_t, K_BLOCK: tl.constexpr):
    """Slots [start, start + K_BLOCK): indices, tempered teacher log-probs a, gathered student b."""
    slots = start + tl.arange(0, K_BLOCK)
    inside = slots < k
    ids = tl.load(idx_row + slots, mask=inside, other=0)
    a = tl.load(lp_row + slots, mask=inside, other=NEG_INF) * inv_t
    b = tl.load(s_row + ids, mask=inside, other=NEG_INF).to(tl.float32) * inv_t
    return ids, inside, a, b


@triton.jit
def _slot_lses(s_row, idx_row, lp_row, k, inv_t, K_BLOCK: tl.constexpr):
    """Online log-sum-exps of the teacher's a and the student's gathered b over the k slots."""
    low = tl.full((), NEG_INF, tl.float32)
    m_a, s_a, m_b, s_b = low, tl.zeros((), tl.float32), low, tl.zeros((), tl.float32)
    for start in range(0, k, K_BLOCK):
        ids, inside, a, b = _load_slots(s_row, idx_row, lp_row, start, k, inv_t, K_BLOCK)
        m_a, s_a = _online_lse(m_a, s_a, a)
        m_b, s_b = _online_lse(m_b, s_b, b)
    return m_a + tl.log(s_a), m_b + tl.log(s_b)


@triton.jit
def _slot_pass(
    s_row,
    idx_row,
    lp_row,
    g_row,
    k,
    inv_t,
    lse_t,
    lse_all,
    coef,
    WRITE_GRAD: tl.constexpr,
    K_BLOCK: tl.constexpr,
):
    """Σ p̃_k (log p̃_k − log q_k) over the slots; stores coef·(q_k − p̃_k) at the support indices."""
    loss = tl.zeros((), tl.float32)
    for start in range(0, k, K_BLOCK):
        ids, inside, a, b = _load_slots(s_row, idx_row, lp_row, start, k, inv_t, K_BLOCK)
        lp = a - _safe(lse_t)
        lq = b - lse_all
        p = tl.where(a == NEG_INF, 0.0, tl.exp(lp))
        loss += tl.sum(tl.where(p > 0, p * (lp - lq), 0.0), 0)
        if WRITE_GRAD:
            tl.store(g_row + ids, ((tl.exp(lq) - p) * coef).to(g_row.dtype.element_ty), mask=inside)
    return loss


@triton.jit
def sparse_kl_kernel(
    s_ptr,
    idx_ptr,
    lp_ptr,
    rest_ptr,
    g_ptr,
    loss_ptr,
    valid_ptr,
    scale_ptr,
    s_stride,
    g_stride,
    V,
    k,
    inv_t,
    REST: tl.constexpr,
    BLOCK: tl.constexpr,
    K_BLOCK: tl.constexpr,
    WRITE_GRAD: tl.constexpr = True,
):
    """Per-token loss (fp32, unscaled) and, if WRITE_GRAD, the scaled gradient w.r.t. the student
    (without it, for evaluation, nothing but the loss is written and pass C is skipped).

    ``idx_ptr``/``lp_ptr``: int64 / fp32 [N, k], contiguous (indices ascending when REST);
    ``rest_ptr``: fp32 [N], the teacher's log rest mass at T = 1 (read only when REST).
    """
    row = tl.program_id(0).to(tl.int64)
    s_row = s_ptr + row * s_stride
    g_row = g_ptr + row * g_stride
    idx_row = idx_ptr + row * k
    lp_row = lp_ptr + row * k
    loss = tl.zeros((), tl.float32)
    fill = tl.zeros((), tl.float32)
    if tl.load(valid_ptr + row) != 0:
        lse_part = _student_lse(s_row, idx_row, V, k, inv_t, REST, BLOCK)
        lse_a, lse_b = _slot_lses(s_row, idx_row, lp_row, k, inv_t, K_BLOCK)
        lse_all = lse_part
        if REST:
            lse_all = _logaddexp(lse_part, lse_b)
        if tl.abs(lse_all) < POS_INF:
            loss = _sparse_row(
                s_row,
                idx_row,
                lp_row,
                g_row,
                rest_ptr + row,
                V,
                k,
                inv_t,
                lse_part,
                lse_a,
                lse_all,
                tl.load(scale_ptr),
                REST,
                WRITE_GRAD,
                BLOCK,
                K_BLOCK,
            )
        else:
            loss += NAN
            fill += NAN
            if WRITE_GRAD:
                _fill_row(g_row, V, fill, BLOCK)
    elif WRITE_GRAD:
        _fill_row(g_row, V, fill, BLOCK)
    tl.store(loss_ptr + row, loss)


@triton.jit
def _sparse_row(
    s_row,
    idx_row,
    lp_row,
    g_row,
    rest_at,
    V,
    k,
    inv_t,
    lse_part,
    lse_a,
    lse_all,
    scale,
    REST: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
    K_BLOCK: tl.constexpr,
):
    """Loss and gradient of one valid, finite row (passes C and the slots)."""
    loss = tl.zeros((), tl.float32)
    a_rest = tl.full((), NEG_INF, tl.float32)
    if REST:
        a_rest = tl.load(rest_at) * inv_t
    lse_t = _logaddexp(lse_a, a_rest)
    coef = tl.where(lse_t == NEG_INF, 0.0, scale * inv_t)
    lp_rest = a_rest - _safe(lse_t)
    p_rest = tl.exp(lp_rest)
    if REST:
        loss = tl.where(p_rest > 0, p_rest * (lp_rest - lse_part + lse_all), 0.0)
    if WRITE_GRAD:
        for start in range(0, V, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            b = tl.load(s_row + cols, mask=cols < V, other=NEG_INF).to(tl.float32) * inv_t
            grad = tl.exp(b - lse_all)
            if REST:
                grad -= p_rest * tl.exp(tl.minimum(b - _safe(lse_part), 0.0))
            tl.store(g_row + cols, (grad * coef).to(g_row.dtype.element_ty), mask=cols < V)
        tl.debug_barrier()
    slots = _slot_pass(s_row, idx_row, lp_row, g_row, k, inv_t, lse_t, lse_all, coef, WRITE_GRAD, K_BLOCK)
    return loss + slots


@triton.jit
def _owned_slots(s_row, idx_row, lp_row, start, k, V, inv_t, K_BLOCK: tl.constexpr):
    """Slots [start, start + K_BLOCK) for a vocabulary slice of V columns: slice-local indices, which
    slots this slice holds, tempered teacher log-probs a, and the student's b where held (else -inf)."""
    slots = start + tl.arange(0, K_BLOCK)
    inside = slots < k
    ids = tl.load(idx_row + slots, mask=inside, other=-1)
    owned = inside & (ids >= 0) & (ids < V)
    a = tl.load(lp_row + slots, mask=inside, other=NEG_INF) * inv_t
    b = tl.load(s_row + ids, mask=owned, other=NEG_INF).to(tl.float32) * inv_t
    return ids, owned, a, b


@triton.jit
def sparse_kl_shard_kernel(
    s_ptr,
    idx_ptr,
    lp_ptr,
    rest_ptr,
    g_ptr,
    loss_ptr,
    stats_ptr,
    valid_ptr,
    scale_ptr,
    s_stride,
    g_stride,
    V,
    k,
    inv_t,
    REST: tl.constexpr,
    PHASE: tl.constexpr,
    BLOCK: tl.constexpr,
    K_BLOCK: tl.constexpr,
):
    """Vocabulary-parallel entry (fastkd.parallel): one phase on a slice of V student logits, the
    teacher's k slots holding slice-local ids (ascending when REST; outside [0, V) on other ranks).

    SHARD_STATS (pass A, reads V, twice with REST): stats[row, 0] = the slice's log-sum-exp of b, and
    with REST stats[row, 1] = that over the slice's columns outside the support.
    SHARD_GRAD (pass C, reads V + O(k), writes V): from the global ones in stats[row, 0:2], the slice's
    dense gradient and, over the slots it holds, (q_k − p̃_k)/T; returns the slice's −Σ p̃_k b_k
    (the only part of the loss that needs the student's slot logits). Gradient scaled as above. A
    non-finite global row (NaN or +inf in some slice, or −inf everywhere) gets NaN.
    """
    row = tl.program_id(0).to(tl.int64)
    s_row = s_ptr + row * s_stride
    g_row = g_ptr + row * g_stride
    idx_row = idx_ptr + row * k
    lp_row = lp_ptr + row * k
    st_row = stats_ptr + row * 4
    picked = tl.zeros((), tl.float32)
    fill = tl.zeros((), tl.float32)
    if tl.load(valid_ptr + row) != 0:
        if PHASE == SHARD_STATS:
            tl.store(st_row, _student_lse(s_row, idx_row, V, k, inv_t, False, BLOCK))
            if REST:
                tl.store(st_row + 1, _student_lse(s_row, idx_row, V, k, inv_t, True, BLOCK))
        else:
            lse_all = tl.load(st_row)
            lse_rest = tl.load(st_row + 1)
            if tl.abs(lse_all) < POS_INF:
                m_a = tl.full((), NEG_INF, tl.float32)
                s_a = tl.zeros((), tl.float32)
                for start in range(0, k, K_BLOCK):
                    ids, owned, a, b = _owned_slots(s_row, idx_row, lp_row, start, k, V, inv_t, K_BLOCK)
                    m_a, s_a = _online_lse(m_a, s_a, a)
                a_rest = tl.full((), NEG_INF, tl.float32)
                if REST:
                    a_rest = tl.load(rest_ptr + row) * inv_t
                lse_t = _logaddexp(m_a + tl.log(s_a), a_rest)
                coef = tl.where(lse_t == NEG_INF, 0.0, tl.load(scale_ptr) * inv_t)
                p_rest = tl.exp(a_rest - _safe(lse_t))
                for start in range(0, V, BLOCK):
                    cols = start + tl.arange(0, BLOCK)
                    b = tl.load(s_row + cols, mask=cols < V, other=NEG_INF).to(tl.float32) * inv_t
                    grad = tl.exp(b - lse_all)
                    if REST:
                        grad -= p_rest * tl.exp(tl.minimum(b - _safe(lse_rest), 0.0))
                    tl.store(g_row + cols, (grad * coef).to(g_ptr.dtype.element_ty), mask=cols < V)
                tl.debug_barrier()
                for start in range(0, k, K_BLOCK):
                    ids, owned, a, b = _owned_slots(s_row, idx_row, lp_row, start, k, V, inv_t, K_BLOCK)
                    p = tl.where(a == NEG_INF, 0.0, tl.exp(a - _safe(lse_t)))
                    picked += tl.sum(tl.where(owned & (p > 0), p * b, 0.0), 0)
                    grad = (tl.exp(b - lse_all) - p) * coef
                    tl.store(g_row + ids, grad.to(g_row.dtype.element_ty), mask=owned)
            else:  # a non-finite global student row (NaN or +inf in a slice, or -inf everywhere)
                picked += NAN
                fill += NAN
                _fill_row(g_row, V, fill, BLOCK)
    elif PHASE == SHARD_GRAD:
        _fill_row(g_row, V, fill, BLOCK)
    tl.store(loss_ptr + row, -picked)
