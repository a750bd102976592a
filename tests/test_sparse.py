"""Sparse (top-k) teacher KL: every backend against the fp64 oracle, edge cases, k = V equals forward KL."""

from __future__ import annotations

import pytest
import torch

import fastkd
import fastkd.losses as L
from tests.conftest import DEVICE
from tests.helpers import DTYPES, TRITON_AND_CPU_BACKENDS, assert_close_to_oracle
from tests.oracle_sparse import oracle_sparse_kl

RENORMALIZE = [True, False]


def logits(
    *shape: int, scale: float = 3.0, dtype: torch.dtype = torch.float32, seed: int = 0
) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen) * scale).to(dtype=dtype, device=DEVICE)


def cache(teacher: torch.Tensor, k: int, shuffle: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """teacher_topk's cache of ``teacher``, slots shuffled (the loss must not rely on their order)."""
    idx, lp = fastkd.teacher_topk(teacher, k)
    if shuffle:
        order = torch.rand(idx.shape, generator=torch.Generator().manual_seed(7)).argsort(-1).to(DEVICE)
        idx, lp = idx.gather(-1, order), lp.gather(-1, order)
    return idx, lp


def some_ignored(*shape: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, shape, generator=gen)
    labels.view(-1)[::3] = -100
    return labels.to(DEVICE)


def run(student, idx, lp, backend, grad_output=1.0, **options) -> tuple[torch.Tensor, torch.Tensor]:
    z = student.detach().clone().requires_grad_()
    loss = L.sparse_kl(z, idx, lp, backend=backend, **options)
    loss.backward(torch.as_tensor(grad_output, dtype=loss.dtype, device=loss.device).expand_as(loss))
    return loss.detach(), z.grad


def run_oracle(student, idx, lp, grad_output=1.0, **options) -> tuple[torch.Tensor, torch.Tensor]:
    z = student.detach().to(torch.float64).requires_grad_()
    loss = oracle_sparse_kl(z, idx, lp, **options)
    if not loss.requires_grad:  # no valid token: the loss is a constant 0
        return loss, torch.zeros_like(z)
    loss.backward(torch.as_tensor(grad_output, dtype=torch.float64, device=loss.device).expand_as(loss))
    return loss.detach(), z.grad


def assert_matches_oracle(student, idx, lp, backend, grad_output=1.0, **options) -> None:
    """The tolerance rule of tests/helpers.py (within twice plain PyTorch's error of the fp64 oracle,
    plus one rounding of the dtype and fp32's floor on these logits and log-probs); no NaN anywhere."""
    assert_close_to_oracle(
        lambda b: run(student, idx, lp, b, grad_output, **options),
        run_oracle(student, idx, lp, grad_output, **options),
        student,
        lp.masked_fill(lp.isinf(), 0.0),
        backend,
        grad_output,
        options,
    )


@pytest.mark.parametrize("renormalize", RENORMALIZE)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", TRITON_AND_CPU_BACKENDS)
def test_matches_oracle(backend, dtype, renormalize):
    z = logits(2, 3, 1271, dtype=dtype)
    idx, lp = cache(logits(2, 3, 1271, seed=5), 37)
    options = dict(labels=some_ignored(2, 3), temperature=2.0, renormalize=renormalize)
    assert_matches_oracle(z, idx, lp, backend, grad_output=1.7, **options)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("renormalize", RENORMALIZE)
@pytest.mark.parametrize("backend", TRITON_AND_CPU_BACKENDS)
def test_reductions_masks_and_divisor(backend, renormalize, reduction):
    z = logits(4, 5, 300)
    idx, lp = cache(logits(4, 5, 300, seed=7), 16)
    mask = torch.rand(4, 5, generator=torch.Generator().manual_seed(3)).to(DEVICE) > 0.3
    grad_output = torch.linspace(0.5, 2.0, 20, device=DEVICE).reshape(4, 5) if reduction == "none" else 0.6
    options = dict(labels=some_ignored(4, 5), mask=mask, reduction=reduction, renormalize=renormalize)
    assert_matches_oracle(z, idx, lp, backend, grad_output, temperature=0.8, **options)
    if reduction == "mean":
        assert_matches_oracle(z, idx, lp, backend, num_items_in_batch=37, renormalize=renormalize)


def _padded_vocab() -> tuple:
    """-inf at the padded tail of both vocabularies; k larger than the finite count for row 0."""
    z, u = logits(3, 1271), logits(3, 1271, seed=2)
    z[..., -37:], u[..., -37:] = float("-inf"), float("-inf")
    u[0, 10:] = float("-inf")
    return z, *cache(u, 20)


def _padding_slots() -> tuple:
    """A cache with -inf padding slots (probability 0) and one token whose slots are all padding."""
    idx, lp = cache(logits(4, 500, seed=2), 12)
    lp[1, 5:] = float("-inf")
    lp[2] = float("-inf")
    return logits(4, 500), idx, lp


def _huge_gaps() -> tuple:
    z, u = logits(3, 1271) * 40.0, logits(3, 1271, seed=2) * 40.0
    z[..., 3] += 150.0
    u[..., 10] += 150.0
    return z, *cache(u, 8)


def _student_mass_on_support() -> tuple:
    """q_rest ≈ 1e-15 while p_rest ≈ 1e-3: log q_rest must not come from 1 − Σ q_k."""
    u = logits(3, 2000, seed=2)
    idx, lp = cache(u, 40)
    z = torch.full((3, 2000), -20.0, device=DEVICE).scatter(-1, idx, 15.0 + logits(3, 40, scale=1.0))
    return z, idx, lp


EDGE_CASES = {
    "wide_vocab": lambda: (logits(2, 151936), *cache(logits(2, 151936, seed=2), 64), {}),
    "single_token": lambda: (logits(1, 1271), *cache(logits(1, 1271, seed=2), 5), {}),
    "all_ignored": lambda: (
        logits(3, 100),
        *cache(logits(3, 100, seed=2), 4),
        {"labels": torch.full((3,), -100, device=DEVICE)},
    ),
    "all_masked_sum": lambda: (
        logits(3, 100),
        *cache(logits(3, 100, seed=2), 4),
        {"mask": torch.zeros(3, dtype=torch.bool, device=DEVICE), "reduction": "sum"},
    ),
    "padded_vocab": lambda: (*_padded_vocab(), {}),
    "padding_slots": lambda: (*_padding_slots(), {"temperature": 1.5}),
    "huge_logit_gaps": lambda: (*_huge_gaps(), {}),
    "low_temperature": lambda: (logits(3, 4097), *cache(logits(3, 4097, seed=2), 100), {"temperature": 0.5}),
    "k_one": lambda: (logits(3, 777), *cache(logits(3, 777, seed=2), 1), {"temperature": 3.0}),
    "k_equals_v": lambda: (logits(3, 300), *cache(logits(3, 300, seed=2), 300), {"temperature": 1.5}),
    "tiny_vocab": lambda: (logits(5, 2), *cache(logits(5, 2, seed=2), 1), {}),
    "student_mass_on_support": lambda: (*_student_mass_on_support(), {}),
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
@pytest.mark.parametrize("renormalize", RENORMALIZE)
@pytest.mark.parametrize("backend", TRITON_AND_CPU_BACKENDS)
def test_edge_cases(backend, renormalize, case):
    z, idx, lp, options = EDGE_CASES[case]()
    assert_matches_oracle(z, idx, lp, backend, grad_output=1.3, renormalize=renormalize, **options)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("renormalize", RENORMALIZE)
@pytest.mark.parametrize("backend", TRITON_AND_CPU_BACKENDS)
def test_k_equals_v_with_teacher_topk_is_forward_kl(backend, renormalize, temperature):
    """The full cache (k = V) gives the core forward KL on the full teacher logits, loss and gradient."""
    z, u = logits(2, 3, 1271), logits(2, 3, 1271, seed=4)
    labels = some_ignored(2, 3)
    idx, lp = fastkd.teacher_topk(u, 1271)
    loss, grad = run(z, idx, lp, backend, labels=labels, temperature=temperature, renormalize=renormalize)
    zf = z.clone().requires_grad_()
    full = L.forward_kl(zf, u, labels=labels, temperature=temperature, backend="torch")
    full.backward()
    torch.testing.assert_close(loss, full.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, zf.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("backend", TRITON_AND_CPU_BACKENDS)
def test_int32_indices_non_contiguous_student_and_slot_order(backend):
    z = logits(300, 6).T  # [6, 300], not unit stride along V
    idx, lp = cache(logits(6, 300, seed=3), 9, shuffle=False)
    sorted_loss = run(z, idx, lp, backend, renormalize=False)
    assert_matches_oracle(z, idx.to(torch.int32), lp, backend, renormalize=False)
    flipped = run(z, idx.flip(-1), lp.flip(-1), backend, renormalize=False)
    torch.testing.assert_close(flipped, sorted_loss, rtol=1e-6, atol=1e-7)


def test_renormalize_drops_the_rest_and_the_rest_bucket_adds_its_kl():
    """The two modes differ exactly by the rest bucket; with a student equal to the cached teacher on
    the support and its rest mass matching, the rest-bucket KL is 0 (fp64 oracle, independent check)."""
    u = logits(2, 400, seed=2)
    idx, lp = fastkd.teacher_topk(u, 10)
    with_rest = L.sparse_kl(u, idx, lp, renormalize=False, reduction="none", backend="torch")
    assert with_rest.abs().max() < 1e-5
    renormalized = L.sparse_kl(u, idx, lp, renormalize=True, reduction="none", backend="torch")
    mass = lp.double().exp().sum(-1)
    assert torch.allclose(renormalized.double(), -mass.log(), rtol=1e-4)  # KL(p̂‖q) = −log Σ_S p at q = p


@pytest.mark.parametrize("temperature", [1.0, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_teacher_topk_is_the_sorted_top_of_log_softmax(dtype, temperature):
    u = logits(2, 3, 1000, dtype=dtype)
    idx, lp = fastkd.teacher_topk(u, 17, temperature=temperature)
    assert idx.dtype == torch.int64 and lp.dtype == torch.float32 and idx.shape == (2, 3, 17)
    full = torch.log_softmax(u.double() / temperature, dim=-1)
    torch.testing.assert_close(lp.double(), full.gather(-1, idx), rtol=0, atol=1e-5)
    assert (lp[..., 1:] <= lp[..., :-1]).all()
    assert (
        torch.equal(full.topk(17).values.float(), lp.float())
        or (lp.double() - full.topk(17).values).abs().max() < 1e-5
    )
