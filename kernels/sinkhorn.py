"""Triton kernels of SinKD (arXiv 2402.17110): the L1 cost between student and teacher rows, and its
gradient, tiled so that no [B, B, V] tensor and no [B, V] probability buffer exists.

- ``row_lse_kernel``: one program per row, online log-sum-exp of z/τ (student) and u/τ (teacher) over
  vocabulary tiles. Reads 2·B·V, writes 2·B.
- ``cost_kernel``: one program per (BI × BJ) tile of pairs, looping over V in tiles of BV. It recomputes
  q = exp(z/τ − lse) and p from the logits in registers (BI·BV + BJ·BV exps per step against BI·BJ·BV
  pair terms: a 1/BJ + 1/BI overhead, cheaper than writing and re-reading an fp32 [B, V] copy) and
  accumulates W_ij = Σ_v |q_iv − p_jv| and, for the backward, D_ij = Σ_v q_iv·sign(q_iv − p_jv).
  Reads B·V·(B/BJ + B/BI) elements, writes B² (2·B²).
- ``cost_grad_kernel``: one program per (BI rows × BV columns) tile, looping over the B teacher rows:
  h_iv = Σ_j G_ij·sign(q_iv − p_jv) (G = dS/dW), then the softmax Jacobian
  dS/dz_iv = q_iv·(h_iv − c_i)/τ with c_i = Σ_v q_iv h_iv = Σ_j G_ij D_ij given by the caller, so one
  pass suffices. Reads B·V·(1 + B/BI) elements, writes B·V.
Invalid rows (mask / ignore_index) load as probability 0; the transport plan gives them no mass.
"""

import triton
import triton.language as tl

NEG_INF = tl.constexpr(float("-inf"))


@triton.jit
def _online_lse(m, s, x):
    m_new = tl.maximum(m, tl.max(x, 0))
    m_safe = tl.where(m_new == NEG_INF, 0.0, m_new)
    return m_new, s * tl.exp(m - m_safe) + tl.sum(tl.exp(x - m_safe), 0)


@triton.jit
def row_lse_kernel(s_ptr, t_ptr, lse_s_ptr, lse_t_ptr, s_stride, t_stride, V, inv_tau, BLOCK: tl.constexpr):
    """lse_s[row] = logsumexp(z/τ), lse_t[row] = logsumexp(u/τ), online over tiles of BLOCK."""
    row = tl.program_id(0).to(tl.int64)
    s_row = s_ptr + row * s_stride
    t_row = t_ptr + row * t_stride
    low = tl.full((), NEG_INF, tl.float32)
    zero = tl.zeros((), tl.float32)
    m_s, sum_s, m_t, sum_t = low, zero, low, zero
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        inside = cols < V
        z = tl.load(s_row + cols, mask=inside, other=NEG_INF).to(tl.float32) * inv_tau
        u = tl.load(t_row + cols, mask=inside, other=NEG_INF).to(tl.float32) * inv_tau
        m_s, sum_s = _online_lse(m_s, sum_s, z)
        m_t, sum_t = _online_lse(m_t, sum_t, u)
    tl.store(lse_s_ptr + row, m_s + tl.log(sum_s))
    tl.store(lse_t_ptr + row, m_t + tl.log(sum_t))


@triton.jit
def _probs(ptr, rows, keep, lse, stride, cols, V, inv_tau):
    """Probabilities [R, BV] of ``rows`` at ``cols`` (0 for rows not kept and columns past V)."""
    offsets = rows.to(tl.int64)[:, None] * stride + cols[None, :]
    mask = keep[:, None] & (cols < V)[None, :]
    x = tl.load(ptr + offsets, mask=mask, other=NEG_INF).to(tl.float32)
    return tl.where(mask, tl.exp(x * inv_tau - lse[:, None]), 0.0)


@triton.jit
def _sign(x):
    """sign(x) with sign(0) = 0, as autograd's |x| has."""
    return tl.where(x > 0, 1.0, 0.0) - tl.where(x < 0, 1.0, 0.0)


@triton.jit
def _rows(valid_ptr, lse_ptr, start, B, BLOCK: tl.constexpr):
    rows = start + tl.arange(0, BLOCK)
    inside = rows < B
    keep = inside & (tl.load(valid_ptr + rows, mask=inside, other=0) != 0)
    return rows, inside, keep, tl.load(lse_ptr + rows, mask=keep, other=0.0)


@triton.jit
def cost_kernel(
    s_ptr, t_ptr, lse_s_ptr, lse_t_ptr, valid_ptr, w_ptr, d_ptr, s_stride, t_stride, B, V, inv_tau,
    WITH_D: tl.constexpr, BI: tl.constexpr, BJ: tl.constexpr, BV: tl.constexpr,
):  # fmt: skip
    """W[i, j] = Σ_v |q_iv − p_jv| and (WITH_D) D[i, j] = Σ_v q_iv·sign(q_iv − p_jv), fp32 [B, B]."""
    ri, in_i, keep_i, lse_i = _rows(valid_ptr, lse_s_ptr, tl.program_id(0) * BI, B, BI)
    rj, in_j, keep_j, lse_j = _rows(valid_ptr, lse_t_ptr, tl.program_id(1) * BJ, B, BJ)
    w = tl.zeros((BI, BJ), tl.float32)
    d = tl.zeros((BI, BJ), tl.float32)
    for start in range(0, V, BV):
        cols = start + tl.arange(0, BV)
        q = _probs(s_ptr, ri, keep_i, lse_i, s_stride, cols, V, inv_tau)
        p = _probs(t_ptr, rj, keep_j, lse_j, t_stride, cols, V, inv_tau)
        diff = q[:, None, :] - p[None, :, :]
        w += tl.sum(tl.abs(diff), 2)
        if WITH_D:
            d += tl.sum(_sign(diff) * q[:, None, :], 2)
    out = ri.to(tl.int64)[:, None] * B + rj[None, :]
    pair = in_i[:, None] & in_j[None, :]
    tl.store(w_ptr + out, w, mask=pair)
    if WITH_D:
        tl.store(d_ptr + out, d, mask=pair)


@triton.jit
def cost_grad_kernel(
    s_ptr, t_ptr, lse_s_ptr, lse_t_ptr, valid_ptr, g_ptr, c_ptr, grad_ptr, s_stride, t_stride, grad_stride,
    B, V, inv_tau, BI: tl.constexpr, BJ: tl.constexpr, BV: tl.constexpr,
):  # fmt: skip
    """grad[i, v] = q_iv·(Σ_j G_ij·sign(q_iv − p_jv) − c_i)/τ, in the dtype of ``grad``."""
    ri, in_i, keep_i, lse_i = _rows(valid_ptr, lse_s_ptr, tl.program_id(0) * BI, B, BI)
    cols = tl.program_id(1) * BV + tl.arange(0, BV)
    q = _probs(s_ptr, ri, keep_i, lse_i, s_stride, cols, V, inv_tau)
    h = tl.zeros((BI, BV), tl.float32)
    for start in range(0, B, BJ):
        rj, in_j, keep_j, lse_j = _rows(valid_ptr, lse_t_ptr, start, B, BJ)
        p = _probs(t_ptr, rj, keep_j, lse_j, t_stride, cols, V, inv_tau)
        g_offsets = ri.to(tl.int64)[:, None] * B + rj[None, :]
        g = tl.load(g_ptr + g_offsets, mask=keep_i[:, None] & keep_j[None, :], other=0.0)
        h += tl.sum(_sign(q[:, None, :] - p[None, :, :]) * g[:, :, None], 1)
    c = tl.load(c_ptr + ri, mask=keep_i, other=0.0)
    grad = q * (h - c[:, None]) * inv_tau
    offsets = ri.to(tl.int64)[:, None] * grad_stride + cols[None, :]
    tl.store(grad_ptr + offsets, grad.to(grad_ptr.dtype.element_ty), mask=in_i[:, None] & (cols < V)[None, :])
