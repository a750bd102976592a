"""Triton kernel of RLKD's index set: the union of the teacher's and the student's top-k per row.

One program handles one token row in one pass over the vocabulary (tiles of BLOCK), reading teacher
and student once (2·V elements) and writing 2k indices and 2·2k fp32 values: no sort and no [N, V]
buffer. Each logit becomes an int64 key, ordered_bits(value)·2³² + (2³¹ − 1 − column), so that key
order is value order with ties going to the lower column (a stable descending sort's choice) and all
keys of a row are distinct. A running top-k of keys (KP ≥ k slots, the slots ≥ k pinned at +max) takes
in a tile only when the tile's best key beats the running k-th best, then k rounds of
"tile max replaces the running min"; after the first tiles almost every tile is skipped on one max.
"""

import triton
import triton.language as tl

INT64_MIN = tl.constexpr(-(2**63))
INT64_MAX = tl.constexpr(2**63 - 1)
LOW_MASK = tl.constexpr(2**32 - 1)


@triton.jit
def _keys(row_ptr, cols, V):
    """Packed int64 keys of one tile (INT64_MIN beyond V); -0.0 counts as +0.0, and every NaN (of either
    sign bit) as the largest value, so that a row holding NaN or +inf has it in its top-k."""
    inside = cols < V
    x = tl.load(row_ptr + cols, mask=inside, other=0.0).to(tl.float32)
    bits = tl.where(x == 0.0, 0.0, x).to(tl.int32, bitcast=True)
    bits = tl.where(x != x, 0x7FFFFFFF, bits)
    ordered = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(tl.int64)
    packed = ordered * 4294967296 + (2147483647 - cols).to(tl.int64)
    return tl.where(inside, packed, INT64_MIN)


@triton.jit
def _merge(best, tile, k, slots):
    """Fold a tile of keys into the running top-k ``best`` [KP]."""
    if tl.max(tile, 0) > tl.min(best, 0):
        for _ in range(k):
            c = tl.max(tile, 0)
            at = tl.argmin(best, 0)
            best = tl.where((slots == at) & (c > tl.min(best, 0)), c, best)
            tile = tl.where(tile == c, INT64_MIN, tile)
    return best


@triton.jit
def _column(key):
    return 2147483647 - (key & LOW_MASK)


@triton.jit
def _write(idx_ptr, a_ptr, b_ptr, dst, t_row, s_row, col, in_k):
    """Store columns (-1 = none) and the teacher / student logits there (fp32, 0 at -1)."""
    keep = col >= 0
    safe = tl.where(keep, col, 0)
    tl.store(idx_ptr + dst, col.to(tl.int64), mask=in_k)
    tl.store(a_ptr + dst, tl.load(t_row + safe, mask=keep, other=0.0).to(tl.float32), mask=in_k)
    tl.store(b_ptr + dst, tl.load(s_row + safe, mask=keep, other=0.0).to(tl.float32), mask=in_k)


@triton.jit
def topk_union_kernel(
    s_ptr,
    t_ptr,
    idx_ptr,
    a_ptr,
    b_ptr,
    valid_ptr,
    s_stride,
    t_stride,
    V,
    k,
    KP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Row n writes idx[n, :k] = the teacher's top-k columns, idx[n, k:2k] = the student's top-k columns
    not among them (-1 for duplicates), a = teacher and b = student logits there (fp32, 0 at -1).
    Invalid rows write -1 everywhere and read nothing."""
    row = tl.program_id(0).to(tl.int64)
    s_row = s_ptr + row * s_stride
    t_row = t_ptr + row * t_stride
    valid = tl.load(valid_ptr + row) != 0
    slots = tl.arange(0, KP)
    start_key = tl.where(slots < k, INT64_MIN, INT64_MAX).to(tl.int64)
    best_t = start_key
    best_s = start_key
    for start in range(0, tl.where(valid, V, 0), BLOCK):
        cols = start + tl.arange(0, BLOCK)
        best_t = _merge(best_t, _keys(t_row, cols, V), k, slots)
        best_s = _merge(best_s, _keys(s_row, cols, V), k, slots)
    used = (slots < k) & valid
    col_t = tl.where(used, _column(best_t), -1)
    col_s = tl.where(used, _column(best_s), -1)
    dup = tl.sum(((col_t[:, None] == col_s[None, :]) & used[None, :]).to(tl.int32), 0) > 0
    col_s = tl.where(dup, -1, col_s)
    out = row * 2 * k + slots
    _write(idx_ptr, a_ptr, b_ptr, out, t_row, s_row, col_t, slots < k)
    _write(idx_ptr, a_ptr, b_ptr, out + k, t_row, s_row, col_s, slots < k)
