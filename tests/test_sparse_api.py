"""Sparse-teacher KL: bad input, module, registration (opcheck, torch.compile), memory, AOT compile."""

from __future__ import annotations

import inspect

import pytest
import torch

import fastkd
import fastkd.losses as L
from bench.memory import measure
from fastkd.ops.sparse import sparse_kl_fwd
from tests.conftest import DEVICE, assert_compiled_without_spills
from tests.helpers import HAS_TRITON, compiled_and_eager

needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="no triton")
Z = torch.randn(2, 3, 11)
IDX = torch.tensor([0, 4, 7]).expand(2, 3, 3).contiguous()
LP = torch.log(torch.tensor([0.5, 0.3, 0.1])).expand(2, 3, 3).contiguous()


def _with(idx: torch.Tensor | None = None, lp: torch.Tensor | None = None, **options: object):
    return lambda: L.sparse_kl(Z, IDX if idx is None else idx, LP if lp is None else lp, **options)


def _set(x: torch.Tensor, value: float) -> torch.Tensor:
    x = x.clone()
    x[1, 2, 1] = value
    return x


CASES = [
    ("index dtype", _with(idx=IDX.float()), TypeError, r"teacher_topk_indices must be int64 or int32"),
    ("logprob dtype", _with(lp=LP.long()), TypeError, r"teacher_topk_logprobs must be a floating"),
    ("not tensors", _with(idx=IDX.tolist()), TypeError, r"must be torch.Tensors, got list"),
    ("shape mismatch", _with(lp=LP[..., :2]), ValueError, r"\(2, 3, 3\) and \(2, 3, 2\)"),
    ("leading shape", _with(idx=IDX[:1], lp=LP[:1]), ValueError, r"leading shape \(2, 3\), got \(1, 3, 3\)"),
    ("k zero", _with(idx=IDX[..., :0], lp=LP[..., :0]), ValueError, r"\[\.\.\., V\] with V >= 1|k must"),
    (
        "k above V",
        _with(idx=torch.zeros(2, 3, 12, dtype=torch.long), lp=torch.zeros(2, 3, 12)),
        ValueError,
        r"k must lie in \[1, V = 11\], got k = 12",
    ),
    ("index negative", _with(idx=_set(IDX, -1)), ValueError, r"must lie in \[0, 11\).*\[0, -1, 7\]"),
    ("index too large", _with(idx=_set(IDX, 11)), ValueError, r"must lie in \[0, 11\).*\[0, 11, 7\]"),
    ("duplicate index", _with(idx=_set(IDX, 7)), ValueError, r"repeat within a token.*\[0, 7, 7\]"),
    ("nan logprob", _with(lp=_set(LP, float("nan"))), ValueError, r"contain NaN"),
    ("positive logprob", _with(lp=_set(LP, 0.5)), ValueError, r"log-probabilities \(<= 0.*0\.5"),
    ("renormalize type", _with(renormalize=1), TypeError, r"renormalize must be a bool"),
    ("temperature", _with(temperature=0.0), ValueError, r"temperature must be > 0, got 0.0"),
    ("reduction", _with(reduction="avg"), ValueError, r"unknown reduction 'avg'"),
    ("backend", _with(backend="jax"), ValueError, r"unknown backend 'jax'"),
    ("labels shape", _with(labels=torch.zeros(2, 4, dtype=torch.long)), ValueError, r"labels must have"),
    ("mask dtype", _with(mask=torch.ones(2, 3)), TypeError, r"mask must be a bool or integer"),
    ("device", _with(idx=IDX.to("meta")), ValueError, r"teacher_topk_indices is on meta"),
    ("module per-call option", lambda: L.SparseKLLoss(mask=None), TypeError, r"per-call arguments"),
    ("module bad option", lambda: L.SparseKLLoss(temperature=-1.0), ValueError, r"temperature must be > 0"),
    ("topk k", lambda: fastkd.teacher_topk(Z, 12), ValueError, r"k must lie in \[1, V = 11\], got 12"),
    ("topk k type", lambda: fastkd.teacher_topk(Z, 2.0), TypeError, r"k must be an int"),
    ("topk temperature", lambda: fastkd.teacher_topk(Z, 2, temperature=0.0), ValueError, r"> 0"),
]


@pytest.mark.parametrize("call, error, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_bad_values_of_ignored_tokens_are_not_checked_and_int32_is_accepted():
    idx, lp = _set(IDX, 99), _set(LP, float("nan"))
    labels = torch.zeros(2, 3, dtype=torch.long)
    labels[1, 2] = -100
    assert torch.isfinite(L.sparse_kl(Z, idx.int(), lp, labels=labels))


def test_negative_infinity_logprobs_are_padding():
    lp = LP.clone()
    lp[..., 2] = float("-inf")
    assert torch.isfinite(L.sparse_kl(Z, IDX, lp, renormalize=False))


@pytest.mark.parametrize("renormalize", [True, False])
def test_reference_gradcheck_fp64(renormalize):
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(3, 9, dtype=torch.float64, generator=gen).requires_grad_()
    idx = torch.tensor([[0, 3, 5], [8, 1, 2], [4, 6, 7]])
    lp = torch.log_softmax(torch.randn(3, 9, generator=gen), -1).gather(-1, idx)
    labels = torch.tensor([1, -100, 2])
    fn = lambda x: L.sparse_kl(
        x, idx, lp, labels=labels, renormalize=renormalize, temperature=1.7, backend="torch"
    )
    assert torch.autograd.gradcheck(fn, (z,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_module_matches_function_and_teacher_gets_no_gradient(backend):
    idx, lp = fastkd.teacher_topk(torch.randn(2, 3, 11), 4)
    lp.requires_grad_()
    module = L.SparseKLLoss(renormalize=False, temperature=1.5, backend=backend)
    assert "renormalize=False" in repr(module)
    z = Z.clone().requires_grad_()
    loss = module(z, idx, lp)
    loss.backward()
    assert loss.dtype == torch.float32 and lp.grad is None
    assert torch.allclose(loss, L.sparse_kl(Z, idx, lp, renormalize=False, temperature=1.5, backend=backend))


@needs_triton
def test_fused_backward_twice_raises_and_scalars_are_not_constexpr():
    import triton.language as tl

    from fastkd.kernels.sparse import sparse_kl_kernel

    loss = L.sparse_kl(Z.clone().requires_grad_(), IDX, LP, backend="triton")
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward per forward"):
        loss.backward()
    params = inspect.signature(getattr(sparse_kl_kernel, "fn", sparse_kl_kernel)).parameters
    assert all(params[n].annotation is not tl.constexpr for n in ("V", "k", "inv_t"))


def op_args(renormalize: bool) -> tuple:
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(4, 300, generator=gen).to(DEVICE)
    idx, lp = fastkd.teacher_topk(torch.randn(4, 300, generator=gen).to(DEVICE), 7)
    rest = torch.full((4,), -3.0, device=DEVICE) if not renormalize else torch.full((4,), float("-inf"))
    valid = torch.tensor([True, False, True, True], device=DEVICE)
    scale = torch.tensor(1 / 3, device=DEVICE)
    return (student, idx, lp, rest.to(DEVICE), valid, scale, torch.empty_like(student), renormalize, 1.5)


@needs_triton
@pytest.mark.parametrize("renormalize", [True, False])
def test_opcheck(renormalize):
    tests = ("test_schema", "test_faketensor", "test_aot_dispatch_static", "test_aot_dispatch_dynamic")
    torch.library.opcheck(sparse_kl_fwd, op_args(renormalize), test_utils=tests)
    assert hasattr(torch.ops.fastkd.sparse_kl_fwd.default, "_schema")


@needs_triton
@pytest.mark.parametrize("renormalize", [True, False])
def test_torch_compile_fullgraph_matches_eager(renormalize):
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(2, 3, 257, generator=gen).to(DEVICE)
    idx, lp = fastkd.teacher_topk(torch.randn(2, 3, 257, generator=gen).to(DEVICE), 9)
    labels = torch.tensor([[1, -100, 3], [4, 5, -100]], device=DEVICE)

    def step(student: torch.Tensor) -> torch.Tensor:
        return L.sparse_kl(
            student * 2.0, idx, lp, labels=labels, renormalize=renormalize, temperature=1.3, backend="triton"
        )

    loss, compiled_grad, eager_grad = compiled_and_eager(step, z)
    assert torch.allclose(loss, step(z), rtol=1e-6)
    assert torch.allclose(compiled_grad, eager_grad, rtol=1e-5, atol=1e-9)


@needs_triton
@pytest.mark.parametrize("renormalize", [True, False])
def test_fused_path_allocates_no_n_by_v_fp32_buffer(renormalize):
    """bf16 student: the fused forward+backward allocates the bf16 gradient and per-row / per-slot
    tensors only (measured as in tests/test_memory.py); the reference's fp32 [N, V] buffers show in
    the same measurement."""
    n, v, k = 16, 3000, 32
    z = torch.randn(n, v).to(DEVICE, torch.bfloat16).requires_grad_()
    idx, lp = fastkd.teacher_topk(torch.randn(n, v).to(DEVICE), k)

    def step(backend: str):
        def run() -> None:
            z.grad = None
            L.sparse_kl(z, idx, lp, renormalize=renormalize, backend=backend).backward()

        run()  # warm up outside the measurement
        return run

    gradient = n * v * 2
    use = measure(step("triton"), DEVICE)
    assert use.peak is not None and use.peak <= gradient + 64 * n * k + 4096, (use.peak, gradient)
    assert all(size <= gradient for size in use.allocations), sorted(use.allocations)[-3:]
    if DEVICE == "cpu":
        assert measure(step("torch"), DEVICE).peak >= gradient + n * v * 4


@needs_triton
def test_sparse_kernel_compiles_without_spills(aot_records):
    mine = assert_compiled_without_spills(aot_records, "sparse")
    assert {r["rest"] for r in mine} == {False, True}
    assert {r["dtype"] for r in mine} == {"bf16", "fp32"}
    assert max(r["registers"] for r in mine) <= 128
