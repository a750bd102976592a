"""RLKD ranking loss and rlkd against the fp64 oracle (tests/oracle_ranking.py), every backend."""

from __future__ import annotations

import pytest
import torch

from fastkd.reference.softrank import rank_loss, rank_loss_and_grad, soft_rank
from tests import oracle_ranking
from tests.conftest import DEVICE
from tests.helpers import DTYPES, TEST_PARAM, TRITON_ONLY_BACKENDS
from tests.ranking_helpers import assert_matches_oracle, run_fastkd
from tests.test_divergence import logits, some_ignored


def test_soft_rank_matches_oracle_pav_and_gradcheck():
    gen = torch.Generator().manual_seed(0)
    theta = (torch.randn(6, 9, generator=gen, dtype=torch.float64) * 2).requires_grad_()
    ranks = soft_rank(theta)
    for n in range(6):
        exact = oracle_ranking.soft_rank(theta[n])
        assert torch.allclose(ranks[n], exact, atol=1e-12)
        g = torch.randn(9, generator=gen, dtype=torch.float64)
        mine = torch.autograd.grad(ranks[n] @ g, theta, retain_graph=True)[0][n]
        assert torch.allclose(mine, torch.autograd.grad(exact @ g, theta)[0][n], atol=1e-12)
    slot = torch.rand(6, 9, generator=gen) > 0.3
    assert torch.autograd.gradcheck(lambda t: soft_rank(t, slot), (theta,))
    a = torch.randn(6, 9, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: rank_loss(a, t, slot), (theta,))


def test_closed_form_gradient_equals_autograd():
    gen = torch.Generator().manual_seed(1)
    a, b = (torch.randn(8, 10, generator=gen, dtype=torch.float64) * 3 for _ in range(2))
    slot = torch.rand(8, 10, generator=gen) > 0.2
    b[0, :] = 1.5  # all tied: rho := 0, gradient 0
    b[1, 2] = float("-inf")
    loss, grad = rank_loss_and_grad(a, b, slot)
    z = b.clone().requires_grad_()
    auto = rank_loss(a, z, slot)
    auto.sum().backward()
    assert torch.allclose(loss, auto) and torch.allclose(grad, z.grad, atol=1e-12)
    assert loss[0] == 1.0 and (grad[0] == 0).all() and grad[1, 2] == 0


def test_soft_rank_examples_from_the_paper_convention():
    """torchsort's README example: soft_rank([8, 0, 5, 3, 2, 1, 6, 7, 9]) at strength 1, and
    [3, 1, 2] / 10 = strength 10 gives [2.1, 1.9, 2.0] (ascending ranks)."""
    x = torch.tensor([[8.0, 0, 5, 3, 2, 1, 6, 7, 9]], dtype=torch.float64)
    assert torch.equal(soft_rank(x), torch.tensor([[8.0, 1, 5, 4, 3, 2, 6, 7, 9]], dtype=torch.float64))
    y = soft_rank(torch.tensor([[0.3, 0.1, 0.2]], dtype=torch.float64))
    assert torch.allclose(y, torch.tensor([[2.1, 1.9, 2.0]], dtype=torch.float64))


def test_matches_torchsort_soft_rank():
    torchsort = pytest.importorskip(
        "torchsort", reason="torchsort is optional (its sdist did not build here)"
    )
    gen = torch.Generator().manual_seed(2)
    theta = torch.randn(5, 12, generator=gen, dtype=torch.float64) * 3
    assert torch.allclose(soft_rank(theta), torchsort.soft_rank(theta), atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", TRITON_ONLY_BACKENDS)
def test_ranking_matches_oracle(backend, dtype):
    z, u = logits(2, 3, 1271, dtype=dtype), logits(2, 3, 1271, dtype=dtype, seed=5)
    labels = some_ignored(2, 3, vocab=1271)
    assert_matches_oracle("ranking_loss", z, u, backend, grad_output=1.7, labels=labels, k=5)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("backend", TRITON_ONLY_BACKENDS)
def test_reductions_masks_and_divisor(backend, reduction):
    z, u = logits(4, 5, 300), logits(4, 5, 300, seed=7)
    mask = torch.rand(4, 5, generator=torch.Generator().manual_seed(3)).to(DEVICE) > 0.3
    grad_output = torch.linspace(0.5, 2.0, 20, device=DEVICE).reshape(4, 5) if reduction == "none" else 0.6
    options = dict(labels=some_ignored(4, 5, vocab=300), mask=mask, reduction=reduction, k=3)
    assert_matches_oracle("ranking_loss", z, u, backend, grad_output, **options)
    assert_matches_oracle("rlkd", z, u, backend, grad_output, **options, temperature=2.0)
    if reduction == "mean":
        assert_matches_oracle("ranking_loss", z, u, backend, num_items_in_batch=37, k=7)


@pytest.mark.parametrize(
    "divergence", ["forward_kl", "reverse_kl", "jsd", "skew_kl", "tvd", "akl", "soft_cross_entropy"]
)
@pytest.mark.parametrize("backend", TRITON_ONLY_BACKENDS)
def test_rlkd_with_each_divergence(backend, divergence):
    z, u = logits(6, 777, dtype=torch.bfloat16), logits(6, 777, seed=11, dtype=torch.bfloat16)
    param = {"jsd": {"beta": TEST_PARAM["jsd"]}, "skew_kl": {"alpha": 0.2}, "akl": {"mu": 0.5}}
    options = dict(divergence=divergence, temperature=1.5, k=4, **param.get(divergence, {}))
    assert_matches_oracle("rlkd", z, u, backend, grad_output=0.8, **options)


def _ties() -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Teacher ties straddle the top-k boundary (ties go to the lower column), tied student values,
    one all-tied teacher row and one all-tied student row (rho := 0), scaled to avoid PAV kinks."""
    gen = torch.Generator().manual_seed(4)
    u = torch.randint(0, 4, (4, 50), generator=gen).float() * 0.37
    z = torch.randint(0, 6, (4, 50), generator=gen).float() * 0.29
    u[1] = 0.5
    z[2] = -1.0
    return z.to(DEVICE), u.to(DEVICE), {"k": 5}


def _neg_inf() -> tuple[torch.Tensor, torch.Tensor, dict]:
    z, u = logits(3, 1271), logits(3, 1271, seed=2)
    z[..., -37:] = float("-inf")
    u[..., 5:1268] = float("-inf")  # the teacher has fewer finite logits than k in its row
    z[0, :1230] = float("-inf")  # the student too: 4 finite logits
    return z, u, {"k": 6}


def _huge_gaps() -> tuple[torch.Tensor, torch.Tensor, dict]:
    z, u = logits(3, 1271) * 40.0, logits(3, 1271, seed=2) * 40.0
    z[..., 3] += 150.0
    u[..., 10] += 150.0
    return z, u, {}


EDGE_CASES = {
    "ties": _ties,
    "k_is_1": lambda: (logits(4, 64), logits(4, 64, seed=2), {"k": 1}),
    "k_is_vocab": lambda: (logits(3, 12), logits(3, 12, seed=2), {"k": 12}),
    "vocab_1": lambda: (logits(3, 1), logits(3, 1, seed=2), {"k": 1}),
    "wide_vocab": lambda: (logits(2, 151936), logits(2, 151936, seed=2), {"k": 8}),
    "single_token": lambda: (logits(1, 1271), logits(1, 1271, seed=2), {}),
    "all_ignored": lambda: (logits(3, 100), logits(3, 100, seed=2), {"labels": torch.full((3,), -100)}),
    "neg_inf_logits": _neg_inf,
    "huge_logit_gaps": _huge_gaps,
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
@pytest.mark.parametrize("backend", TRITON_ONLY_BACKENDS)
def test_edge_cases(backend, case):
    z, u, options = EDGE_CASES[case]()
    assert_matches_oracle("ranking_loss", z, u, backend, grad_output=1.3, **options)
    if case in ("ties", "all_ignored", "neg_inf_logits", "vocab_1"):
        assert_matches_oracle("rlkd", z, u, backend, grad_output=1.3, **options)


@pytest.mark.parametrize("backend", TRITON_ONLY_BACKENDS)
def test_gradient_reaches_only_the_union_columns(backend):
    z, u = logits(3, 500), logits(3, 500, seed=3)
    _, grad = run_fastkd("ranking_loss", z, u, backend, k=4)
    for n in range(3):
        union = set(
            oracle_ranking.top_k_columns(u[n].tolist(), 4) + oracle_ranking.top_k_columns(z[n].tolist(), 4)
        )
        assert set(grad[n].nonzero().flatten().tolist()) <= union
    assert (grad != 0).any()


@pytest.mark.parametrize("backend", TRITON_ONLY_BACKENDS)
def test_all_ignored_mean_is_zero_and_tied_rows_give_one(backend):
    z, u = logits(3, 100), logits(3, 100, seed=2)
    loss, grad = run_fastkd("ranking_loss", z, u, backend, labels=torch.full((3,), -100))
    assert loss.item() == 0.0 and (grad == 0).all()
    tied = torch.zeros(2, 100, device=DEVICE)
    loss, grad = run_fastkd("ranking_loss", z[:2], tied, backend, reduction="none")
    assert torch.equal(loss, torch.ones(2)) and (grad == 0).all()


@pytest.mark.parametrize("backend", TRITON_ONLY_BACKENDS)
def test_mixed_dtypes_non_contiguous_and_hard_labels(backend):
    z = logits(40, 8).T  # [8, 40] with unit stride along the tokens, not along V
    u = logits(8, 40, seed=4, dtype=torch.bfloat16)
    labels = some_ignored(8, vocab=40)
    assert_matches_oracle("ranking_loss", z, u, backend, k=3)
    assert_matches_oracle("rlkd", z, u, backend, k=3, labels=labels, hard_label_weight=0.25)


def test_reference_top_k_breaks_ties_by_lower_column():
    from fastkd.reference.ranking import top_k_columns

    gen = torch.Generator().manual_seed(6)
    x = torch.randint(0, 3, (20, 40), generator=gen).float()
    x[0] = 0.0
    x[1, 10:] = float("-inf")
    got = top_k_columns(x, 7).sort(-1).values
    exact = [sorted(oracle_ranking.top_k_columns(row.tolist(), 7)) for row in x]
    assert got.tolist() == exact
