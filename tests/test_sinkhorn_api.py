"""SinKD API: bad input, modules, the GLUE objective, memory, torch.library registration and AOT."""

from __future__ import annotations

import pytest
import torch

import fastkd.losses as L
from bench.memory import measure
from fastkd.boundary.sinkhorn import SinkhornOptions
from fastkd.functional.sinkhorn import fused_sinkhorn
from fastkd.ops.sinkhorn import sinkhorn_cost, sinkhorn_cost_grad
from tests.conftest import DEVICE, assert_compiled_without_spills
from tests.helpers import HAS_TRITON, compiled_and_eager, max_err
from tests.oracle_sinkhorn import oracle_sinkd_objective, oracle_sinkhorn

needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="no triton")


def logits(*shape: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(*shape, generator=gen)).to(DEVICE), (3 * torch.randn(*shape, generator=gen)).to(
        DEVICE
    )


@pytest.mark.parametrize(
    "options, error, words",
    [
        (dict(epsilon=0.0), ValueError, "epsilon must be > 0, got 0.0"),
        (dict(epsilon=-0.1), ValueError, "epsilon must be > 0, got -0.1"),
        (dict(epsilon=float("nan")), ValueError, "epsilon must be finite"),
        (dict(tau=0.0), ValueError, "tau must be > 0, got 0.0"),
        (dict(tau=-2.0), ValueError, "tau must be > 0, got -2.0"),
        (dict(n_iters=0), ValueError, "n_iters must be >= 1, got 0"),
        (dict(n_iters=2.0), TypeError, "n_iters must be an int, got float"),
        (dict(n_iters=True), TypeError, "n_iters must be an int, got bool"),
        (dict(scale=-1e-3), ValueError, "scale must be >= 0, got -0.001"),
        (dict(scale="1"), TypeError, "scale must be a Python float"),
        (dict(log_domain="yes"), ValueError, "log_domain must be 'auto', True or False"),
        (dict(backend="gpu"), ValueError, "unknown backend 'gpu'"),
    ],
)
def test_bad_options_raise(options, error, words):
    z, u = logits(4, 3)
    with pytest.raises(error, match=words.replace("(", r"\(").replace(".", r"\.")):
        L.sinkhorn_loss(z, u, **options)
    if "backend" not in options:
        with pytest.raises(error):
            L.SinkhornLoss(**options)


def test_bad_tensors_raise():
    z, u = logits(4, 3)
    with pytest.raises(ValueError, match=r"same shape, got \(4, 3\) and \(4, 5\)"):
        L.sinkhorn_loss(z, torch.zeros(4, 5, device=DEVICE))
    with pytest.raises(ValueError, match="mask must have the logits' leading shape"):
        L.sinkhorn_loss(z, u, mask=torch.ones(3, dtype=torch.bool, device=DEVICE))
    with pytest.raises(TypeError, match="mask must be a bool or integer"):
        L.sinkhorn_loss(z, u, mask=torch.ones(4, device=DEVICE))
    with pytest.raises(TypeError, match="student_logits must be a floating tensor"):
        L.sinkhorn_loss(z.long(), u)
    with pytest.raises(ValueError, match="alpha must lie in"):
        L.sinkd_objective(z, u, torch.zeros(4, dtype=torch.long, device=DEVICE), alpha=1.5, temperature=2.0)
    with pytest.raises(TypeError, match="needs integer class labels"):
        L.sinkd_objective(z, u, None, alpha=0.5, temperature=2.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        L.SinKDObjectiveLoss(alpha=0.5, temperature=0.0)
    with pytest.raises(ValueError, match="sinkhorn_weight must be >= 0"):
        L.sinkd_objective(
            z,
            u,
            torch.zeros(4, dtype=torch.long, device=DEVICE),
            alpha=0.5,
            temperature=2.0,
            sinkhorn_weight=-1.0,
        )


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_objective_matches_oracle(backend):
    z, u = logits(12, 3, seed=1)
    labels = torch.tensor([0, 1, 2, -100, 1, 0, 2, 2, -100, 1, 0, 1], device=DEVICE)
    options = dict(alpha=0.4, temperature=3.0, epsilon=0.2, n_iters=10)
    zz = z.clone().requires_grad_()
    total, parts = L.sinkd_objective(zz, u, labels, backend=backend, return_parts=True, **options)
    total.backward()
    z64 = z.double().requires_grad_()
    exact = oracle_sinkd_objective(z64, u.double(), labels, **options)
    exact.backward()
    assert abs(total.item() - exact.item()) <= 1e-5 * abs(exact.item())
    assert max_err(zz.grad, z64.grad) <= 1e-5 * z64.grad.abs().max().item()
    recombined = 0.4 * parts["kd"] + 0.6 * parts["ce"] + 0.8 * parts["sinkhorn"]
    assert torch.allclose(recombined, total.detach(), rtol=1e-6)
    module = L.SinKDObjectiveLoss(backend=backend, **options)
    assert torch.allclose(module(z, u, labels), total.detach(), rtol=1e-6)


def test_objective_with_every_label_ignored_is_zero():
    z, u = logits(4, 3)
    zz = z.clone().requires_grad_()
    loss = L.sinkd_objective(zz, u, torch.full((4,), -100, device=DEVICE), alpha=0.5, temperature=2.0)
    loss.backward()
    assert loss.item() == 0.0 and (zz.grad == 0).all()


def test_module_equals_function_and_teacher_side():
    z, u = logits(2, 6, 9, seed=2)
    mask = torch.tensor([[True, False, True, True, True, False]] * 2, device=DEVICE)
    module = L.SinkhornLoss(epsilon=0.2, n_iters=7, backend="torch")
    assert "epsilon=0.2" in repr(module)
    assert torch.equal(
        module(z, u, mask=mask), L.sinkhorn_loss(z, u, mask=mask, epsilon=0.2, n_iters=7, backend="torch")
    )
    swapped = oracle_sinkhorn(u.double(), z.double(), mask, epsilon=0.2, n_iters=7)
    assert abs(module(z, u, mask=mask).item() - swapped.item()) > 1e-9  # the cost is not symmetric in Π


def forward_backward(impl: str, z: torch.Tensor, u: torch.Tensor, **options: object) -> None:
    """One step of the torch backend (``impl`` "torch") or of the fused path ("fused-torch")."""
    zz = z.clone().requires_grad_()
    if impl == "torch":
        L.sinkhorn_loss(zz, u, backend="torch", **options).backward()
    else:
        valid = torch.ones(z.shape[0], dtype=torch.bool)
        fused_sinkhorn(zz, u, valid, SinkhornOptions(**options), impl.removeprefix("fused-")).backward()


@pytest.mark.skipif(DEVICE != "cpu", reason="profiler memory records on CPU")
@pytest.mark.parametrize("impl", ["torch", "fused-torch"])
def test_no_pairwise_vocab_tensor(impl):
    rows, vocab = 32, 32768
    z, u = logits(rows, vocab, seed=3)
    largest = max(measure(lambda: forward_backward(impl, z, u), "cpu").allocations)
    assert largest < rows * rows * vocab * 4 // 16, largest  # [B, B, V] fp32 would be 128 MiB
    assert largest <= 4 * rows * vocab  # at most one fp32 [B, V] temporary


@pytest.mark.skipif(DEVICE != "cpu", reason="profiler memory records on CPU")
def test_fused_backward_keeps_no_copy_of_the_plan_per_iteration():
    z, u = logits(256, 2, seed=4)
    plan_bytes = 256 * 256 * 4
    fused_long = measure(lambda: forward_backward("fused-torch", z, u, n_iters=100), "cpu").peak
    fused_short = measure(lambda: forward_backward("fused-torch", z, u, n_iters=2), "cpu").peak
    naive_long = measure(lambda: forward_backward("torch", z, u, n_iters=100), "cpu").peak
    assert fused_long <= fused_short + plan_bytes, (fused_long, fused_short)
    assert naive_long > 100 * plan_bytes > 10 * fused_long, (naive_long, fused_long)


def op_args(impl: str) -> tuple:
    z, u = logits(6, 40, seed=5)
    valid = torch.tensor([True, True, False, True, True, True], device=DEVICE)
    return z, u, valid, 0.5, impl == "triton", impl


@pytest.mark.parametrize("impl", ["torch", pytest.param("triton", marks=needs_triton)])
def test_opcheck(impl):
    utils = ("test_schema", "test_faketensor", "test_aot_dispatch_static", "test_aot_dispatch_dynamic")
    args = op_args(impl)
    torch.library.opcheck(sinkhorn_cost, args, test_utils=utils)
    w, d, lse_s, lse_t = sinkhorn_cost(*args)
    g = torch.randn_like(w) * args[2][:, None] * args[2][None, :]
    grad_args = (*args[:3], lse_s, lse_t, g, d, 0.5, impl)
    torch.library.opcheck(sinkhorn_cost_grad, grad_args, test_utils=utils)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_torch_compile_fullgraph_matches_eager(backend):
    z, u = logits(2, 5, 33, seed=6)
    mask = torch.rand(2, 5, generator=torch.Generator().manual_seed(0)).to(DEVICE) > 0.2

    def step(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return L.sinkhorn_loss(student * 1.5, teacher, mask=mask, n_iters=6, backend=backend)

    loss, compiled_grad, eager_grad = compiled_and_eager(step, z, u)
    assert torch.allclose(loss, step(z, u), rtol=1e-6)
    assert torch.allclose(compiled_grad, eager_grad, rtol=1e-5, atol=1e-12)


@needs_triton
@pytest.mark.parametrize("kernel", ["row_lse", "cost", "cost_grad"])
def test_sinkhorn_kernels_compile_without_spills(aot_records, kernel):
    mine = assert_compiled_without_spills(aot_records, "sinkhorn", kernel=kernel)
    assert {r["dtype"] for r in mine} == {"bf16", "fp32"}
