"""What is particular to the C++ CPU backend (fastkd._C): threads, determinism, strides, wide rows,
registration, memory. The oracle comparisons of every divergence run in test_divergence.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import fastkd.losses as L
from bench.memory import measure
from fastkd.backends import resolve
from fastkd.boundary.options import DIVERGENCES
from fastkd.ops.divergence_cpu import divergence_cpu
from tests.conftest import DEVICE
from tests.helpers import (
    HAS_CPU_EXTENSION,
    assert_matches_oracle,
    compiled_and_eager,
    family_kwargs,
    run_fastkd,
)

pytestmark = pytest.mark.skipif(
    not HAS_CPU_EXTENSION or DEVICE != "cpu", reason="needs CPU tensors and the built fastkd._C"
)


def pair(n: int, v: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return tuple((3.0 * torch.randn(n, v, generator=gen)).to(dtype) for _ in range(2))


def with_threads(count: int, call: Callable[[], tuple]) -> tuple:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        return call()
    finally:
        torch.set_num_threads(before)


def test_auto_picks_the_cpu_kernels_for_cpu_tensors():
    assert resolve("auto", torch.zeros(2, 3)) == "cpu"
    assert resolve("auto", torch.zeros(2, 3, dtype=torch.float64)) == "torch"


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_results_do_not_depend_on_the_thread_count_or_the_run(divergence):
    z, u = pair(9, 3001, dtype=torch.bfloat16)
    labels = torch.arange(9) * 300
    labels[4] = -100
    options = dict(labels=labels, hard_label_weight=0.2, reduction="none", **family_kwargs(divergence))
    run = lambda: run_fastkd(z, u, divergence, "cpu", **options)
    one = with_threads(1, run)
    two = with_threads(2, run)
    again = with_threads(2, run)
    for x, y, w in zip(one, two, again, strict=True):
        assert torch.equal(x, y) and torch.equal(y, w)


@pytest.mark.parametrize("divergence", ["forward_kl", "jsd", "akl"])
def test_rows_with_a_stride_wider_than_the_vocabulary(divergence):
    z_wide, u_wide = pair(6, 1400, seed=3)
    z, u = z_wide[:, :1271], u_wide[:, 100:1371]
    assert z.stride(0) == 1400 and not z.is_contiguous()
    loss, grad = run_fastkd(z, u, divergence, "cpu", **family_kwargs(divergence))
    dense_loss, dense_grad = run_fastkd(
        z.contiguous(), u.contiguous(), divergence, "cpu", **family_kwargs(divergence)
    )
    assert torch.equal(loss, dense_loss) and torch.equal(grad, dense_grad)
    assert_matches_oracle(z, u, divergence, "cpu", **family_kwargs(divergence))


@pytest.mark.parametrize("divergence", ["reverse_kl", "skew_reverse_kl", "akl"])
def test_wide_vocabulary_at_tiny_n_in_half_precision(divergence):
    z, u = pair(2, 151936, seed=5, dtype=torch.float16)
    labels = torch.tensor([7, 151935])
    options = dict(labels=labels, hard_label_weight=0.1, temperature=0.7, **family_kwargs(divergence))
    assert_matches_oracle(z, u, divergence, "cpu", grad_output=0.4, **options)


@pytest.mark.parametrize("mu", [0.05, 0.3, 0.5, 0.9])
def test_akl_with_few_distinct_teacher_levels(mu):
    """Quantised teacher logits: every row has thousands of ties at each of ~13 levels."""
    z, u = pair(4, 5000, seed=8)
    u = u.round()
    assert_matches_oracle(z, u, "akl", "cpu", mu=mu)


def test_inplace_gradient_matches_the_separate_buffer():
    z, u = pair(5, 777, seed=2)
    loss, expected = run_fastkd(z, u, "skew_kl", "cpu", alpha=0.2)
    leaf = z.clone().requires_grad_()
    student = leaf * 1.0  # a model's logits: not a leaf
    buffer = student.detach()
    L.skew_kl(student, u, alpha=0.2, backend="cpu", inplace_grad=True).backward()
    assert torch.equal(leaf.grad, expected) and torch.equal(buffer, expected)


def test_opcheck_of_the_cpu_op():
    z, u = pair(4, 300, seed=4)
    valid = torch.tensor([True, False, True, True])
    labels = torch.tensor([3, -100, 7, 299])
    for divergence, hard in [("forward_kl", 0.0), ("jsd", 0.2), ("akl", 0.0)]:
        args = (z, u, valid, labels, torch.tensor(1 / 3), torch.empty_like(z), divergence, 0.3, 1.5, hard)
        torch.library.opcheck(divergence_cpu, args)


def test_torch_compile_fullgraph_matches_eager():
    z, u = pair(6, 257, seed=6)
    labels = torch.tensor([1, -100, 3, 4, 5, -100])

    def step(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return L.akl(student * 2.0, teacher, labels=labels, mu=0.4, backend="cpu")

    loss, compiled_grad, eager_grad = compiled_and_eager(step, z, u)
    assert torch.equal(loss, step(z, u)) and torch.equal(compiled_grad, eager_grad)


@pytest.mark.parametrize("divergence", ["jsd", "akl"])
def test_no_n_by_v_fp32_buffer(divergence):
    """bf16 logits: beyond the bf16 gradient, less than one [N, V] fp32 buffer's bytes."""
    z, u = pair(256, 4096, dtype=torch.bfloat16)
    student = z.requires_grad_()
    grad_bytes = z.numel() * z.element_size()

    def step() -> None:
        L.kd_loss(student, u, divergence, backend="cpu").backward()

    step()
    student.grad = None
    extra = measure(step, "cpu").peak - grad_bytes
    fp32_buffer = z.numel() * 4
    assert 0 <= extra < fp32_buffer / 8, (extra, fp32_buffer)
    student.grad = None
    assert (
        measure(lambda: L.kd_loss(student, u, divergence, backend="torch").backward(), "cpu").peak
        > fp32_buffer
    )
