"""What is particular to the cuda backend (the Hopper cluster kernels): on every machine, how it is
chosen and the error where it is not built; on an sm_90 GPU with the kernels built, the conventions,
every cluster size and the fallback to Triton. The oracle comparisons of every divergence run in
test_divergence.py (its BACKENDS include "cuda" there)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import fastkd.backends as backends
import fastkd.losses as L
from fastkd.backends import CudaWin, cuda_kernels_available, resolve
from fastkd.boundary.options import DIVERGENCES
from fastkd.ops.cuda_plan import plan_for
from tests.helpers import HAS_CUDA_KERNELS, assert_matches_oracle, family_kwargs, run_fastkd

needs_kernels = pytest.mark.skipif(
    not HAS_CUDA_KERNELS, reason="needs an sm_90 GPU and fastkd._C built with its CUDA kernels"
)


@pytest.mark.skipif(cuda_kernels_available(), reason="fastkd._C has its CUDA kernels here")
def test_backend_cuda_without_the_kernels_says_how_to_build_them():
    z = torch.randn(2, 8)
    with pytest.raises(
        RuntimeError, match=r"backend 'cuda' needs fastkd._C built with its CUDA kernels.*nvcc"
    ):
        L.forward_kl(z, z, backend="cuda")


def test_auto_stays_on_triton_until_a_benchmark_says_otherwise(monkeypatch):
    assert backends.CUDA_WINNERS == ()
    win = CudaWin("forward_kl", torch.bfloat16, 100000, 200000, "H200", "bench/results/x.json")
    monkeypatch.setattr(backends, "CUDA_WINNERS", (win,))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    gpu_row = SimpleNamespace(is_cuda=True, dtype=torch.bfloat16, shape=(4, 128256), device="cuda:0")
    assert backends.cuda_measured_faster("forward_kl", gpu_row)
    assert not backends.cuda_measured_faster("jsd", gpu_row)
    assert not backends.cuda_measured_faster(None, gpu_row)
    assert not backends.cuda_measured_faster(
        "forward_kl", SimpleNamespace(**{**vars(gpu_row), "shape": (4, 32000)})
    )
    assert not backends.cuda_measured_faster(
        "forward_kl", SimpleNamespace(**{**vars(gpu_row), "dtype": torch.half})
    )
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    assert not backends.cuda_measured_faster("forward_kl", gpu_row)
    assert not backends.cuda_measured_faster("forward_kl", torch.zeros(4, 128256, dtype=torch.bfloat16))
    assert (
        resolve("auto", torch.zeros(2, 3), fused=backends.DIVERGENCE_FUSED, divergence="forward_kl") != "cuda"
    )


def pair(n: int, v: int, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device="cuda").manual_seed(seed)
    return tuple((3.0 * torch.randn(n, v, device="cuda", generator=gen)).to(dtype) for _ in range(2))


@needs_kernels
@pytest.mark.parametrize("vocab", [1, 1271, 40000, 100000, 200000])  # cluster sizes 1, 1, 2, 4, 8 in bf16
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_every_cluster_size_matches_the_oracle(divergence, vocab):
    assert plan_for(vocab, 2).cluster == {1: 1, 1271: 1, 40000: 2, 100000: 4, 200000: 8}[vocab]
    z, u = pair(3, vocab, torch.bfloat16, seed=vocab)
    labels = torch.tensor([0, -100, vocab - 1], device="cuda")
    options = dict(labels=labels, hard_label_weight=0.2, temperature=1.3, **family_kwargs(divergence))
    assert_matches_oracle(z, u, divergence, "cuda", grad_output=0.6, **options)


@needs_kernels
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_non_finite_rows_give_nan_and_leave_the_others_alone(divergence):
    z, u = pair(5, 3000, torch.float32, seed=3)
    u[1, 7] = float("nan")
    z[2, 9] = float("inf")
    u[3] = float("-inf")
    loss, grad = run_fastkd(z, u, divergence, "cuda", reduction="none", **family_kwargs(divergence))
    assert torch.isnan(loss[1:4]).all() and torch.isnan(grad[1:4]).all()
    clean = [0, 4]
    expected, expected_grad = run_fastkd(
        z[clean], u[clean], divergence, "cuda", reduction="none", **family_kwargs(divergence)
    )
    assert torch.equal(loss[clean], expected) and torch.equal(grad[clean], expected_grad)


@needs_kernels
@pytest.mark.parametrize("divergence, param", [("reverse_kl", None), ("skew_reverse_kl", 0.0), ("akl", 0.5)])
def test_teacher_neg_inf_under_student_mass_is_inf_with_zero_gradient(divergence, param):
    z, u = pair(3, 2000, torch.bfloat16, seed=4)
    u[1, 100:140] = float("-inf")
    extra = family_kwargs(divergence, param) if param is not None else {}
    loss, grad = run_fastkd(z, u, divergence, "cuda", reduction="none", **extra)
    assert torch.isposinf(loss[1]) and torch.count_nonzero(grad[1]) == 0
    assert torch.isfinite(loss[[0, 2]]).all() and torch.isfinite(grad[[0, 2]]).all()


@needs_kernels
def test_unaligned_rows_wide_strides_inplace_and_the_triton_fallback():
    z_wide, u_wide = pair(4, 1400, torch.bfloat16, seed=5)
    z, u = z_wide[:, 3:1274], u_wide[:, 1:1272]  # rows start off 16-byte boundaries: no bulk copies
    assert_matches_oracle(z, u, "jsd", "cuda", beta=0.3)
    loss, grad = run_fastkd(z, u, "jsd", "cuda", beta=0.3)
    leaf = z.detach().clone().requires_grad_()
    L.jsd(leaf * 1.0, u, beta=0.3, backend="cuda", inplace_grad=True).backward()  # over a non-leaf
    assert torch.equal(leaf.grad, grad)
    mixed = run_fastkd(z, u.float(), "jsd", "cuda", beta=0.3)  # another teacher dtype: the Triton kernel
    assert torch.equal(mixed[1], run_fastkd(z, u.float(), "jsd", "triton", beta=0.3)[1])
