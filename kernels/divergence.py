"""Fused Triton kernels for the logit-level divergence family (forward KL ... AKL).

One program handles one token row of V logits, in vocabulary tiles of BLOCK, with fp32 arithmetic:

- pass A reads teacher and student (2·V elements) for the online log-sum-exps of a = u/T and b = z/T
  (plus raw z for the hard-label term, the teacher's top-1 and reverse KL for the divergences that
  need them);
- pass B, only for divergences whose gradient needs a row sum c = Σ q·h that has no closed form
  (jsd, skew KLs, tvd, akl), reads both again;
- AKL's head/tail threshold is a 16-ary search over the ordered bit patterns of a, reading only the
  teacher (about nine passes), so no sort of the vocabulary is ever held in memory;
- pass C reads both once more, accumulates the loss and writes the gradient
  dℓ/dz_j = (q_j·h_j − q_j·c)/T, already scaled by the reduction, in the student's dtype.

Traffic per row: 2V reads + 2V reads + V writes for forward KL / soft CE / reverse KL; 2V more for the
others. No [N, V] buffer other than the gradient exists; the per-row outputs are one fp32 loss.

Without a gradient (WRITE_GRAD false: evaluation) nothing is written but the loss, and forward KL,
soft CE and reverse KL take their value from pass A alone (online rescaled sums E_p[a − b], E_p[b],
E_q[b − a]): one read of 2V.

Non-finite rows (spec: shared/spec/losses.md, conventions): pass A's log-sum-exps are finite exactly
when both rows are free of NaN and +inf (a NaN or an inf − inf reaches the sum) and not −inf
everywhere, so one scalar test of lse_a and lse_b decides, with no extra pass: such a row gets loss
NaN and a NaN gradient row. A row whose divergence is +inf because the teacher is −inf where the
student has mass (reverse KL, skew reverse KL at α = 0, AKL's reverse part with weight > 0) gets loss
+inf and a zero gradient row.
"""

import triton
import triton.language as tl

FORWARD_KL = tl.constexpr(0)
SOFT_CE = tl.constexpr(1)
REVERSE_KL = tl.constexpr(2)
JSD = tl.constexpr(3)
SKEW_KL = tl.constexpr(4)
SKEW_REVERSE_KL = tl.constexpr(5)
TVD = tl.constexpr(6)
AKL = tl.constexpr(7)

NEG_INF = tl.constexpr(float("-inf"))
POS_INF = tl.constexpr(float("inf"))
NAN = tl.constexpr(float("nan"))
SEARCH_WAYS = tl.constexpr(16)


@triton.jit
def _online_lse(m, s, x):
    """Fold tile x into a running (max, sum of exp(x − max)); -inf tiles leave it unchanged."""
    m_new = tl.maximum(m, tl.max(x, 0))
    m_safe = tl.where(m_new == NEG_INF, 0.0, m_new)
    return m_new, s * tl.exp(m - m_safe) + tl.sum(tl.exp(x - m_safe), 0)


@triton.jit
def _online_mean(m, s, acc, x, y):
    """Fold tile x into (max, Σ exp(x − max), Σ exp(x − max)·y) with y's terms 0 where exp is 0."""
    m_new = tl.maximum(m, tl.max(x, 0))
    m_safe = tl.where(m_new == NEG_INF, 0.0, m_new)
    w = tl.exp(x - m_safe)
    rescale = tl.exp(m - m_safe)
    return m_new, s * rescale + tl.sum(w, 0), acc * rescale + tl.sum(tl.where(w > 0, w * y, 0.0), 0)


@triton.jit
def _fill_row(g_row, V, value, BLOCK: tl.constexpr):
    """Write ``value`` over the V gradient entries of a row (0 for an ignored row, NaN for a bad one)."""
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        fill = tl.zeros((BLOCK,), tl.float32) + value
        tl.store(g_row + cols, fill.to(g_row.dtype.element_ty), mask=cols < V)


@triton.jit
def _softcap(x, cap, ON: tl.constexpr):
    """cap·tanh(x/cap) when ON (tanh as 1 − 2/(e^{2y} + 1), ±1 at ±inf; ``cap`` a runtime value), else x."""
    if ON:
        x = cap * (1.0 - 2.0 / (tl.exp(x * (2.0 / cap)) + 1.0))
    return x


@triton.jit
def _load_tile(s_row, t_row, start, V, inv_t, s_cap, t_cap, CAPS: tl.constexpr, BLOCK: tl.constexpr):
    """Student logits z and tempered teacher a = u/T, z/T; CAPS (bit 1 student, bit 2 teacher) softcaps
    a side as it loads (the fused-linear path)."""
    cols = start + tl.arange(0, BLOCK)
    inside = cols < V
    if CAPS == 0:
        z = tl.load(s_row + cols, mask=inside, other=NEG_INF).to(tl.float32)
        a = tl.load(t_row + cols, mask=inside, other=NEG_INF).to(tl.float32) * inv_t
    else:
        z = _softcap(tl.load(s_row + cols, mask=inside, other=0.0).to(tl.float32), s_cap, CAPS & 1)
        z = tl.where(inside, z, NEG_INF)
        a = _softcap(tl.load(t_row + cols, mask=inside, other=0.0).to(tl.float32), t_cap, CAPS & 2)
        a = tl.where(inside, a, NEG_INF) * inv_t
    return cols, inside, z, a, z * inv_t


@triton.jit
def _log_mixture(lw1, lx, lw2, ly):
    """log(w1·x + w2·y) from logs, -inf where both parts vanish."""
    x = lw1 + lx
    y = lw2 + ly
    top = tl.maximum(x, y)
    top_safe = tl.where(top == NEG_INF, 0.0, top)
    return top_safe + tl.log(tl.exp(x - top_safe) + tl.exp(y - top_safe))


@triton.jit
def _ordered_key(x):
    """Map fp32 to int64 so that integer order equals float order."""
    bits = x.to(tl.int32, bitcast=True)
    return tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(tl.int64)


@triton.jit
def _row_stats(
    s_row, t_row, V, inv_t, s_cap, t_cap, DIV: tl.constexpr, HARD: tl.constexpr, ONE_PASS: tl.constexpr,
    CAPS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Pass A: log-sum-exps of a and b (and raw z), the teacher's top-1 index, and the expectation
    that gives the value in this pass: E_q[b − a] for reverse KL (its gradient needs it too); with
    ONE_PASS, E_p[a − b] for forward KL and E_p[b] for soft CE."""
    zero = tl.zeros((), tl.float32)
    low = tl.full((), NEG_INF, tl.float32)
    m_a, s_a, m_b, s_b, m_z, s_z = low, zero, low, zero, low, zero
    mean_acc, best, top1 = zero, low, tl.zeros((), tl.int32)
    for start in range(0, V, BLOCK):
        cols, inside, z, a, b = _load_tile(s_row, t_row, start, V, inv_t, s_cap, t_cap, CAPS, BLOCK)
        if DIV == REVERSE_KL:
            m_b, s_b, mean_acc = _online_mean(m_b, s_b, mean_acc, b, b - a)
        else:
            m_b, s_b = _online_lse(m_b, s_b, b)
        if ONE_PASS and DIV == FORWARD_KL:
            m_a, s_a, mean_acc = _online_mean(m_a, s_a, mean_acc, a, a - b)
        elif ONE_PASS and DIV == SOFT_CE:
            m_a, s_a, mean_acc = _online_mean(m_a, s_a, mean_acc, a, b)
        else:
            m_a, s_a = _online_lse(m_a, s_a, a)
        if DIV == AKL:
            tile_best = tl.max(a, 0)
            tile_arg = tl.argmax(a, 0)
            top1 = tl.where(tile_best > best, start + tile_arg, top1)
            best = tl.maximum(best, tile_best)
        if HARD:
            m_z, s_z = _online_lse(m_z, s_z, z)
    lse_a = m_a + tl.log(s_a)
    lse_b = m_b + tl.log(s_b)
    lse_z = m_z + tl.log(s_z)
    if DIV == REVERSE_KL:
        one_pass = mean_acc / s_b - lse_b + lse_a
    elif DIV == FORWARD_KL:
        one_pass = mean_acc / s_a - lse_a + lse_b
    else:
        one_pass = lse_b - mean_acc / s_a
    return lse_a, lse_b, lse_z, one_pass, top1, best


@triton.jit
def _akl_threshold(t_row, V, inv_t, t_cap, lse_a, best, mu, CAPS: tl.constexpr, SEARCH_BLOCK: tl.constexpr):
    """AKL's head by a 16-ary search on ordered keys of a, reading only the teacher row.

    Returns the smallest key x with F(x) = Σ_{key(a_i) ≥ x} p_i ≤ μ, F(x), and the probability of the
    tied level just below x: its tokens join the head in index order while the cumulative mass stays
    ≤ μ, exactly as a stable descending sort followed by a cumulative sum would decide.
    """
    lo = _ordered_key(tl.full((), NEG_INF, tl.float32)) - 1
    hi = _ordered_key(best) + 1
    mass_hi = tl.zeros((), tl.float32)
    ways = tl.arange(0, SEARCH_WAYS).to(tl.int64)
    while hi - lo > 1:
        cand = tl.maximum(lo + ((hi - lo) * (ways + 1)) // (SEARCH_WAYS + 1), lo + 1)
        mass = tl.zeros((SEARCH_WAYS,), tl.float32)
        for start in range(0, V, SEARCH_BLOCK):
            cols = start + tl.arange(0, SEARCH_BLOCK)
            a = _softcap(tl.load(t_row + cols, mask=cols < V, other=0.0).to(tl.float32), t_cap, CAPS & 2)
            a = tl.where(cols < V, a, NEG_INF) * inv_t
            above = _ordered_key(a)[:, None] >= cand[None, :]
            mass += tl.sum(tl.where(above, tl.exp(a - lse_a)[:, None], 0.0), 0)
        lo = tl.max(tl.where(mass > mu, cand, lo), 0)
        mass_hi = tl.max(tl.where(mass <= mu, mass, mass_hi), 0)
        hi = tl.min(tl.where(mass <= mu, cand, hi), 0)
    tie_bits = (hi - 1).to(tl.int32)
    tie_value = tl.where(tie_bits < 0, tie_bits ^ 0x7FFFFFFF, tie_bits).to(tl.float32, bitcast=True)
    return hi, mass_hi, tl.exp(tie_value - lse_a)


@triton.jit
def _terms(la, lb, param, lw1, lw2, DIV: tl.constexpr):
    """Elementwise loss term and q·h (h = ∂ℓ/∂q) from la = log p, lb = log q; c = Σ q·h."""
    p = tl.exp(la)
    q = tl.exp(lb)
    if DIV == FORWARD_KL or DIV == AKL:
        term = tl.where(p > 0, p * (la - lb), 0.0)
        qh = -p
    elif DIV == SOFT_CE:
        term = tl.where(p > 0, -p * lb, 0.0)
        qh = -p
    elif DIV == REVERSE_KL:
        term = tl.where(q > 0, q * (lb - la), 0.0)
        qh = term
    elif DIV == JSD:
        lm = _log_mixture(lw1, la, lw2, lb)
        kl_q = tl.where(q > 0, q * (lb - lm), 0.0)
        term = param * tl.where(p > 0, p * (la - lm), 0.0) + (1.0 - param) * kl_q
        qh = (1.0 - param) * kl_q
    elif DIV == SKEW_KL:
        lm = _log_mixture(lw1, la, lw2, lb)
        term = tl.where(p > 0, p * (la - lm), 0.0)
        qh = tl.where(p > 0, -(1.0 - param) * tl.exp(la + lb - lm), 0.0)
    elif DIV == SKEW_REVERSE_KL:
        lm = _log_mixture(lw1, la, lw2, lb)
        term = tl.where(q > 0, q * (lb - lm), 0.0)
        qh = term - tl.where((q > 0) & (param > 0), param * tl.exp(2.0 * lb - lm), 0.0)  # α = 0: no 0·inf
    else:
        term = 0.5 * tl.abs(p - q)
        qh = 0.5 * q * tl.where(q > p, 1.0, tl.where(q < p, -1.0, 0.0))
    return term, qh, p, q


@triton.jit
def _row_reduction(
    s_row, t_row, V, inv_t, s_cap, t_cap, lse_a, lse_b, param, lw1, lw2, head_key, head_mass, tie_p, top1,
    DIV: tl.constexpr, CAPS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Pass B: c = Σ q·h; for AKL the head and tail gaps Σ|p − q| and reverse KL instead."""
    zero = tl.zeros((), tl.float32)
    c, g_head, g_tail, rkl = zero, zero, zero, zero
    ties_seen = tl.zeros((), tl.int32)
    for start in range(0, V, BLOCK):
        cols, inside, z, a, b = _load_tile(s_row, t_row, start, V, inv_t, s_cap, t_cap, CAPS, BLOCK)
        la = a - lse_a
        lb = b - lse_b
        if DIV == AKL:
            p = tl.exp(la)
            q = tl.exp(lb)
            key = _ordered_key(a)
            tie = key == head_key - 1
            tie_rank = ties_seen + tl.cumsum(tie.to(tl.int32), 0)
            ties_seen += tl.sum(tie.to(tl.int32), 0)
            head = (key >= head_key) | (cols == top1) | (tie & (head_mass + tie_rank * tie_p <= param))
            gap = tl.abs(p - q)
            g_head += tl.sum(tl.where(head, gap, 0.0), 0)
            g_tail += tl.sum(tl.where(head, 0.0, gap), 0)
            rkl += tl.sum(tl.where(q > 0, q * (lb - la), 0.0), 0)
        else:
            term, qh, p, q = _terms(la, lb, param, lw1, lw2, DIV)
            c += tl.sum(qh, 0)
    return c, g_head, g_tail, rkl


@triton.jit
def _grad_pass(
    s_row, t_row, g_row, V, inv_t, s_cap, t_cap, lse_a, lse_b, lse_z, param, lw1, lw2, c, w_head, w_tail,
    rkl, scale, label, hard_w, zero_grad, soft, soft_w, DIV: tl.constexpr, HARD: tl.constexpr,
    WRITE_GRAD: tl.constexpr, CAPS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Pass C: ``soft`` + soft_w·Σ of the loss terms and, if WRITE_GRAD, scale·∂ℓ/∂z (0 where
    ``zero_grad``); a student softcap chains the gradient through c·tanh(x/c): × (1 − (z/c)²)."""
    for start in range(0, V, BLOCK):
        cols, inside, z, a, b = _load_tile(s_row, t_row, start, V, inv_t, s_cap, t_cap, CAPS, BLOCK)
        la = a - lse_a
        lb = b - lse_b
        term, qh, p, q = _terms(la, lb, param, lw1, lw2, DIV)
        if DIV == AKL:
            rev = tl.where(q > 0, q * (lb - la), 0.0)
            term = w_head * term + tl.where(w_tail > 0, w_tail * rev, 0.0)
            grad = w_head * (q - p) + tl.where(w_tail > 0, w_tail * (rev - q * rkl), 0.0)
        else:
            grad = qh - q * c
        soft += soft_w * tl.sum(term, 0)
        if WRITE_GRAD:
            grad = grad * inv_t
            if HARD:
                onehot = tl.where(cols == label, 1.0, 0.0)
                grad = (1.0 - hard_w) * grad + hard_w * (tl.exp(z - lse_z) - onehot)
            if CAPS & 1:
                grad = grad * (1.0 - (z * (1.0 / s_cap)) * (z * (1.0 / s_cap)))
            grad = tl.where(zero_grad, 0.0, grad * scale)
            tl.store(g_row + cols, grad.to(g_row.dtype.element_ty), mask=inside)
    return soft


@triton.jit
def divergence_kernel(
    s_ptr,
    t_ptr,
    g_ptr,
    loss_ptr,
    valid_ptr,
    labels_ptr,
    scale_ptr,
    s_stride,
    t_stride,
    g_stride,
    V,
    inv_t,
    param,
    lw1,
    lw2,
    hard_w,
    s_cap,
    t_cap,
    DIV: tl.constexpr,
    HARD: tl.constexpr,
    BLOCK: tl.constexpr,
    SEARCH_BLOCK: tl.constexpr,
    WRITE_GRAD: tl.constexpr = True,
    CAPS: tl.constexpr = 0,
):
    """Per-token loss (fp32, unscaled) and, if WRITE_GRAD, the scaled gradient w.r.t. the student.

    ``lw1, lw2`` are the logs of the mixture weights of (teacher, student) for jsd / skew KLs;
    ``scale_ptr`` holds the gradient's factor (1/N_valid for a mean); ``hard_w`` the CE weight.
    ``g_ptr`` is not touched without WRITE_GRAD (any pointer will do). ``CAPS`` (bit 1: student, bit
    2: teacher; the fused-linear path) softcaps a side's logits x as loaded, s_cap·tanh(x/s_cap) /
    t_cap·tanh(x/t_cap), with the chain rule on the student's gradient.
    """
    row = tl.program_id(0).to(tl.int64)
    s_row = s_ptr + row * s_stride
    t_row = t_ptr + row * t_stride
    g_row = g_ptr + row * g_stride
    loss = tl.zeros((), tl.float32)
    fill = tl.zeros((), tl.float32)
    if tl.load(valid_ptr + row) != 0:
        one = (not WRITE_GRAD) and (DIV <= REVERSE_KL)
        lse_a, lse_b, lse_z, one_pass, top1, best = _row_stats(
            s_row, t_row, V, inv_t, s_cap, t_cap, DIV, HARD, one, CAPS, BLOCK
        )
        label = tl.zeros((), tl.int64)
        if HARD:
            label = tl.load(labels_ptr + row)
        if (tl.abs(lse_a) < POS_INF) & (tl.abs(lse_b) < POS_INF):
            c = tl.zeros((), tl.float32) - 1.0
            w_head, w_tail, rkl = c, c, c
            if DIV == REVERSE_KL:
                c = one_pass
            if DIV >= JSD:
                head_key = tl.zeros((), tl.int64)
                head_mass = tl.zeros((), tl.float32)
                tie_p = tl.zeros((), tl.float32)
                if DIV == AKL:
                    head_key, head_mass, tie_p = _akl_threshold(
                        t_row, V, inv_t, t_cap, lse_a, best, param, CAPS, SEARCH_BLOCK
                    )
                c, g_head, g_tail, rkl = _row_reduction(
                    s_row, t_row, V, inv_t, s_cap, t_cap, lse_a, lse_b, param, lw1, lw2, head_key, head_mass,
                    tie_p, top1, DIV, CAPS, BLOCK,
                )  # fmt: skip
                w_head = g_head / tl.maximum(g_head + g_tail, 1e-8)
                w_tail = g_tail / tl.maximum(g_head + g_tail, 1e-8)
            infinite = c == POS_INF
            if DIV == AKL:
                infinite = (w_tail > 0) & (rkl == POS_INF)
            hard_loss = tl.zeros((), tl.float32)
            soft_w = 1.0
            if HARD:  # read before pass C, which may overwrite it (in-place gradient)
                hard_loss = hard_w * (
                    lse_z - _softcap(tl.load(s_row + label).to(tl.float32), s_cap, CAPS & 1)
                )
                soft_w = 1.0 - hard_w
            if one:
                loss = soft_w * one_pass + hard_loss
            else:
                loss = _grad_pass(
                    s_row, t_row, g_row, V, inv_t, s_cap, t_cap, lse_a, lse_b, lse_z, param, lw1, lw2, c,
                    w_head, w_tail, rkl, tl.load(scale_ptr), label, hard_w, infinite, hard_loss, soft_w, DIV,
                    HARD, WRITE_GRAD, CAPS, BLOCK,
                )  # fmt: skip
            loss = tl.where(infinite, POS_INF, loss)
        else:
            loss += NAN
            fill += NAN
            if WRITE_GRAD:
                _fill_row(g_row, V, fill, BLOCK)
    elif WRITE_GRAD:
        _fill_row(g_row, V, fill, BLOCK)
    tl.store(loss_ptr + row, loss)


# Vocabulary-parallel entry (fastkd.parallel; phases as in fastkd.boundary.parallel). The row is one
# rank's contiguous slice of the vocabulary; per-row statistics travel in stats [N, 4] fp32
# (lse_a, lse_b, lse_z, c) between the phases and the collectives that make them global.
SHARD_STATS = tl.constexpr(1)
SHARD_ROW_SUM = tl.constexpr(2)
SHARD_GRAD = tl.constexpr(3)


@triton.jit
def divergence_shard_kernel(
    s_ptr,
    t_ptr,
    g_ptr,
    loss_ptr,
    stats_ptr,
    valid_ptr,
    labels_ptr,
    scale_ptr,
    s_stride,
    t_stride,
    g_stride,
    V,
    inv_t,
    param,
    lw1,
    lw2,
    hard_w,
    DIV: tl.constexpr,
    HARD: tl.constexpr,
    PHASE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One phase of a vocabulary-parallel divergence on a slice of V logits, from the passes above.

    SHARD_STATS (pass A, reads 2V): writes the slice's lse_a, lse_b (and lse_z of raw z when HARD).
    SHARD_ROW_SUM (pass B, reads 2V): from the global lse_a, lse_b, writes the slice's c = Σ q·h.
    SHARD_GRAD (pass C, reads 2V, writes V): from the global statistics, the slice's soft loss terms
    (not weighted by 1 − hard_w) and its gradient, hard-label part included; ``labels_ptr`` holds
    slice-local ids, out of [0, V) when another rank holds the label. AKL has no phases.
    """
    row = tl.program_id(0).to(tl.int64)
    s_row = s_ptr + row * s_stride
    t_row = t_ptr + row * t_stride
    g_row = g_ptr + row * g_stride
    st_row = stats_ptr + row * 4
    zero = tl.zeros((), tl.float32)
    loss = zero
    fill = zero
    if tl.load(valid_ptr + row) != 0:
        if PHASE == SHARD_STATS:  # a slice may be -inf everywhere (padding): only the global row counts
            lse_a, lse_b, lse_z, one_pass, top1, best = _row_stats(
                s_row, t_row, V, inv_t, 0.0, 0.0, FORWARD_KL, HARD, False, 0, BLOCK
            )
            tl.store(st_row, lse_a)
            tl.store(st_row + 1, lse_b)
            tl.store(st_row + 2, lse_z)
        else:
            lse_a = tl.load(st_row)
            lse_b = tl.load(st_row + 1)
            if (tl.abs(lse_a) < POS_INF) & (tl.abs(lse_b) < POS_INF):
                if PHASE == SHARD_ROW_SUM:
                    head = tl.zeros((), tl.int64)
                    c, g_head, g_tail, rkl = _row_reduction(
                        s_row, t_row, V, inv_t, 0.0, 0.0, lse_a, lse_b, param, lw1, lw2, head, zero, zero,
                        head, DIV, 0, BLOCK,
                    )  # fmt: skip
                    tl.store(st_row + 3, c)
                else:
                    c = zero - 1.0
                    if DIV != FORWARD_KL and DIV != SOFT_CE:
                        c = tl.load(st_row + 3)
                    infinite = c == POS_INF
                    label = tl.zeros((), tl.int64)
                    lse_z = zero
                    if HARD:
                        label = tl.load(labels_ptr + row)
                        lse_z = tl.load(st_row + 2)
                    loss = _grad_pass(
                        s_row, t_row, g_row, V, inv_t, 0.0, 0.0, lse_a, lse_b, lse_z, param, lw1, lw2, c, c,
                        c, c, tl.load(scale_ptr), label, hard_w, infinite, zero, 1.0, DIV, HARD, True, 0,
                        BLOCK,
                    )  # fmt: skip
                    loss = tl.where(infinite, POS_INF, loss)
            elif PHASE == SHARD_GRAD:  # a non-finite global row: NaN loss and gradient
                loss += NAN
                fill += NAN
                _fill_row(g_row, V, fill, BLOCK)
    elif PHASE == SHARD_GRAD:
        _fill_row(g_row, V, fill, BLOCK)
    tl.store(loss_ptr + row, loss)
