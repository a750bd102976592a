"""SinKD (arXiv 2402.17110) against the fp64 oracle: every path, dtypes, shapes, ε / n_iters, masks,
log domain, edge cases."""

from __future__ import annotations

import pytest
import torch

from fastkd.boundary.sinkhorn import SinkhornOptions
from tests.conftest import DEVICE
from tests.helpers import DTYPES
from tests.sinkhorn_helpers import ALL_IMPLS, IMPLS, assert_matches_oracle, run_impl, run_oracle


def logits(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0, spread: float = 3.0) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    z = spread * torch.randn(*shape, generator=gen, dtype=torch.float64)
    u = spread * torch.randn(*shape, generator=gen, dtype=torch.float64)
    return z.to(dtype).to(DEVICE), u.to(dtype).to(DEVICE)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rows, vocab", [(8, 3), (6, 1271), (3, 32000)])
def test_defaults_match_oracle(impl, dtype, rows, vocab):
    z, u = logits(rows, vocab, dtype=dtype)
    assert_matches_oracle(impl, z, u)


@pytest.mark.parametrize("impl", IMPLS)
def test_wide_rows_past_four_match_oracle(impl):
    z, u = logits(5, 4000, dtype=torch.bfloat16, seed=11)
    assert_matches_oracle(impl, z, u, epsilon=0.05)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "options",
    [
        dict(epsilon=0.05, n_iters=5),
        dict(epsilon=0.5, n_iters=1, tau=1.0),
        dict(epsilon=1.0, n_iters=3, scale=0.5),
        dict(epsilon=0.01, n_iters=50, tau=4.0),
    ],
    ids=str,
)
def test_other_options_match_oracle(impl, options):
    z, u = logits(16, 3, seed=1)
    assert_matches_oracle(impl, z, u, grad_output=2.5, **options)


@pytest.mark.parametrize("rows", [1, 2, 33, 512])
def test_batch_sizes_match_oracle(rows):
    z, u = logits(rows, 2, seed=rows)
    assert_matches_oracle(ALL_IMPLS, z, u)


@pytest.mark.parametrize("impl", IMPLS)
def test_mask_and_labels_drop_rows(impl):
    z, u = logits(3, 5, 37, seed=2)
    mask = torch.rand(3, 5, generator=torch.Generator().manual_seed(3)) > 0.3
    labels = torch.arange(15).reshape(3, 5).masked_fill(torch.arange(15).reshape(3, 5) % 4 == 0, -100)
    assert_matches_oracle(impl, z, u, mask=mask.to(DEVICE), labels=labels.to(DEVICE))
    _, grad = run_impl(impl, z, u, mask=mask.to(DEVICE), labels=labels.to(DEVICE))
    assert (grad[~mask] == 0).all() and (grad[labels == -100] == 0).all()


@pytest.mark.parametrize("impl", IMPLS)
def test_dropped_rows_change_nothing_else(impl):
    z, u = logits(10, 7, seed=4)
    mask = torch.tensor([True, False] * 5, device=DEVICE)
    full, _ = run_impl(impl, z[mask], u[mask])
    masked, _ = run_impl(impl, z, u, mask=mask)
    assert torch.allclose(full, masked, rtol=1e-6, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("rows", [0, 6])
def test_no_valid_rows_give_zero(impl, rows):
    z, u = logits(rows, 9, seed=5)
    loss, grad = run_impl(impl, z, u, mask=torch.zeros(rows, dtype=torch.bool, device=DEVICE))
    assert loss.item() == 0.0 and grad.shape == z.shape and (grad == 0).all()


@pytest.mark.parametrize("impl", IMPLS)
def test_inf_logits_and_large_gaps(impl):
    z, u = logits(6, 300, seed=6)
    z[:, 250:] = float("-inf")
    u[:, 290:] = float("-inf")
    z[0, 3] += 150.0
    u[1, 7] += 120.0
    assert_matches_oracle(impl, z, u)
    _, grad = run_impl(impl, z, u)
    assert (grad[:, 250:] == 0).all()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("epsilon", [0.05, 0.1, 0.5])
def test_log_domain_agrees_with_plain(impl, epsilon):
    z, u = logits(24, 5, seed=7)
    plain_loss, plain_grad = run_impl(impl, z, u, epsilon=epsilon, log_domain=False)
    log_loss, log_grad = run_impl(impl, z, u, epsilon=epsilon, log_domain=True)
    assert torch.allclose(plain_loss, log_loss, rtol=1e-5, atol=0)
    assert (plain_grad - log_grad).abs().max() <= 1e-4 * plain_grad.abs().max()


@pytest.mark.parametrize("impl", IMPLS)
def test_small_epsilon_needs_and_gets_the_log_domain(impl):
    z, u = logits(12, 4, seed=8, spread=4.0)
    assert SinkhornOptions(epsilon=0.004).use_log_domain(12)
    assert_matches_oracle(impl, z, u, epsilon=0.004, n_iters=30)
    plain, _ = run_impl(impl, z, u, epsilon=0.004, n_iters=30, log_domain=False)
    exact, _ = run_oracle(z, u, epsilon=0.004, n_iters=30)
    # exp(−W/ε) underflows: the fused paths drop the empty rows (no NaN), the naive reference gets 0/0.
    assert not torch.isnan(plain) or impl == "torch"
    assert torch.isnan(plain) or abs(plain.item() - exact.item()) > 1e-3 * exact.item()


def test_auto_rule():
    assert not SinkhornOptions(epsilon=0.1).use_log_domain(512)
    assert SinkhornOptions(epsilon=0.02).use_log_domain(1)
    assert not SinkhornOptions(epsilon=0.03).use_log_domain(1000)
    assert SinkhornOptions(epsilon=0.03).use_log_domain(10**6)
    assert SinkhornOptions(epsilon=0.1, log_domain=True).use_log_domain(2)
    assert not SinkhornOptions(epsilon=0.001, log_domain=False).use_log_domain(2)


@pytest.mark.parametrize("impl", IMPLS)
def test_teacher_gets_no_gradient(impl):
    z, u = logits(4, 11, seed=9)
    teacher = u.clone().requires_grad_()
    run_impl(impl, z, teacher)
    assert teacher.grad is None


def test_torch_path_in_several_chunks(monkeypatch):
    from fastkd.ops import sinkhorn_torch

    monkeypatch.setattr(sinkhorn_torch, "CHUNK_ELEMENTS", 7 * 64)  # 64 columns of 7 rows, last one short
    z, u = logits(7, 1271, seed=12)
    mask = torch.tensor([True, True, False, True, True, True, True], device=DEVICE)
    assert_matches_oracle("fused-torch", z.bfloat16(), u.bfloat16(), mask=mask, epsilon=0.05)
