"""The public surface: functions, modules, dispatch, endpoints, in-place gradient, gradcheck."""

from __future__ import annotations

import inspect

import pytest
import torch

import fastkd
import fastkd.losses as L
from fastkd.boundary.options import DIVERGENCES
from tests.conftest import DEVICE
from tests.helpers import BACKENDS, HAS_TRITON, family_kwargs, run_fastkd

FUNCTIONS = {name: getattr(L, name) for name in DIVERGENCES}
MODULES = {
    "forward_kl": L.ForwardKLLoss,
    "soft_cross_entropy": L.SoftCrossEntropyLoss,
    "reverse_kl": L.ReverseKLLoss,
    "jsd": L.JSDLoss,
    "skew_kl": L.SkewKLLoss,
    "skew_reverse_kl": L.SkewReverseKLLoss,
    "tvd": L.TVDLoss,
    "akl": L.AKLLoss,
}
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="no triton")


def pair(*shape: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen).to(DEVICE), torch.randn(*shape, generator=gen).to(DEVICE)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_function_module_and_kd_loss_agree(divergence, backend):
    z, u = pair(3, 50)
    labels = torch.tensor([1, -100, 4], device=DEVICE)
    extra = family_kwargs(divergence)
    by_name = L.kd_loss(z, u, divergence, labels=labels, backend=backend, **extra)
    by_function = FUNCTIONS[divergence](z, u, labels=labels, backend=backend, **extra)
    by_module = MODULES[divergence](backend=backend, **extra)(z, u, labels=labels)
    assert torch.equal(by_name, by_function) and torch.equal(by_name, by_module)
    assert by_name.dtype == torch.float32 and by_name.dim() == 0


def test_family_defaults_follow_the_spec():
    z, u = pair(4, 30)
    assert torch.equal(L.jsd(z, u), L.kd_loss(z, u, "jsd", beta=0.5))
    assert torch.equal(L.skew_kl(z, u), L.kd_loss(z, u, "skew_kl", alpha=0.1))
    assert torch.equal(L.skew_reverse_kl(z, u), L.kd_loss(z, u, "skew_reverse_kl", alpha=0.1))
    assert torch.equal(L.akl(z, u), L.kd_loss(z, u, "akl", mu=0.5))
    assert "jsd" in repr(L.JSDLoss(beta=0.2)) and "beta=0.2" in repr(L.JSDLoss(beta=0.2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_jsd_endpoints_are_forward_and_reverse_kl_exactly(backend):
    z, u = pair(3, 64)
    assert torch.equal(L.jsd(z, u, beta=0.0, backend=backend), L.forward_kl(z, u, backend=backend))
    assert torch.equal(L.jsd(z, u, beta=1.0, backend=backend), L.reverse_kl(z, u, backend=backend))
    assert L.jsd(z, u, beta=1e-7, backend=backend) < 1e-3 * L.forward_kl(z, u, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_teacher_gets_no_gradient_and_loss_is_fp32(backend):
    z, u = pair(2, 40)
    z = z.to(torch.bfloat16).requires_grad_()
    u = u.to(torch.bfloat16).requires_grad_()
    loss = L.reverse_kl(z, u, backend=backend)
    loss.backward()
    assert u.grad is None and z.grad.dtype == torch.bfloat16 and loss.dtype == torch.float32


@needs_triton
def test_inplace_grad_writes_the_gradient_over_the_student_logits():
    z, u = pair(4, 300)
    loss, expected = run_fastkd(z, u, "jsd", "triton", beta=0.3)
    leaf = z.clone().requires_grad_()
    student = leaf * 1.0  # a model's logits: not a leaf
    buffer = student.detach()
    L.jsd(student, u, beta=0.3, backend="triton", inplace_grad=True).backward()
    assert torch.allclose(leaf.grad, expected, rtol=1e-6, atol=1e-9)
    assert torch.allclose(buffer, expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_inplace_grad_with_hard_labels_equals_a_separate_gradient(backend):
    """The hard-label term reads the label's logit: an in-place gradient must not change it."""
    z, u = pair(4, 300)
    labels = torch.tensor([3, 299, 0, 150], device=DEVICE)
    options = {"labels": labels, "hard_label_weight": 0.5}
    loss, expected = run_fastkd(z, u, "forward_kl", backend, **options)
    leaf = z.clone().requires_grad_()
    student = leaf * 1.0
    buffer = student.detach()
    in_place = L.forward_kl(student, u, inplace_grad=True, backend=backend, **options)
    in_place.backward()
    assert torch.allclose(in_place.detach(), loss, rtol=1e-6)
    assert torch.allclose(leaf.grad, expected, rtol=1e-6, atol=1e-9)
    assert torch.allclose(buffer, expected, rtol=1e-6, atol=1e-9)


@needs_triton
def test_fused_backward_twice_raises_a_clear_error():
    z, u = pair(2, 40)
    loss = L.forward_kl(z.requires_grad_(), u, backend="triton")
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward per forward"):
        loss.backward()


@needs_triton
def test_runtime_scalars_are_kernel_arguments_not_constexpr():
    """A schedule that changes T, β, α or μ every step must not recompile the kernel."""
    import triton.language as tl

    from fastkd.kernels.divergence import divergence_kernel

    params = inspect.signature(getattr(divergence_kernel, "fn", divergence_kernel)).parameters
    for name in ("inv_t", "param", "lw1", "lw2", "hard_w", "V"):
        assert params[name].annotation is not tl.constexpr, name
    assert all(params[n].annotation is tl.constexpr for n in ("DIV", "HARD", "BLOCK", "SEARCH_BLOCK"))


@pytest.mark.parametrize("divergence", [d for d in DIVERGENCES if d != "akl"])
def test_reference_gradcheck_fp64(divergence):
    """Autograd of the reference equals finite differences (AKL is left out: by the spec its weights
    depend on q but carry no gradient, so its gradient is not the derivative of its value)."""
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(3, 7, dtype=torch.float64, generator=gen).requires_grad_()
    u = torch.randn(3, 7, dtype=torch.float64, generator=gen)
    labels = torch.tensor([2, -100, 6])
    fn = lambda x: L.kd_loss(
        x,
        u,
        divergence,
        labels=labels,
        temperature=1.3,
        hard_label_weight=0.2,
        backend="torch",
        **family_kwargs(divergence),
    )
    assert torch.autograd.gradcheck(fn, (z,), eps=1e-6, atol=1e-7)


def test_package_exports():
    assert set(DIVERGENCES) <= set(L.__all__)
    assert fastkd.DIVERGENCES == DIVERGENCES
