"""Every backend against the fp64 oracle: all divergences, reductions, masks, labels, dtypes, edges."""

from __future__ import annotations

import pytest
import torch

from fastkd.boundary.options import DIVERGENCES
from tests.conftest import DEVICE
from tests.helpers import BACKENDS, DTYPES, assert_matches_oracle, family_kwargs


def logits(
    *shape: int, scale: float = 3.0, dtype: torch.dtype = torch.float32, seed: int = 0
) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen) * scale).to(dtype=dtype, device=DEVICE)


def some_ignored(*shape: int, vocab: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, vocab, shape, generator=gen)
    labels.view(-1)[::3] = -100
    return labels.to(DEVICE)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_matches_oracle(divergence, backend, dtype):
    z, u = logits(2, 3, 1271, dtype=dtype), logits(2, 3, 1271, dtype=dtype, seed=5)
    assert_matches_oracle(
        z,
        u,
        divergence,
        backend,
        grad_output=1.7,
        labels=some_ignored(2, 3, vocab=1271),
        temperature=2.0,
        **family_kwargs(divergence),
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_reductions_masks_and_divisor(divergence, backend, reduction):
    z, u = logits(4, 5, 300), logits(4, 5, 300, seed=7)
    mask = torch.rand(4, 5, generator=torch.Generator().manual_seed(3)).to(DEVICE) > 0.3
    grad_output = torch.linspace(0.5, 2.0, 20, device=DEVICE).reshape(4, 5) if reduction == "none" else 0.6
    options = dict(labels=some_ignored(4, 5, vocab=300), mask=mask, reduction=reduction)
    assert_matches_oracle(z, u, divergence, backend, grad_output, **options, **family_kwargs(divergence))
    if reduction == "mean":
        assert_matches_oracle(z, u, divergence, backend, num_items_in_batch=37, **family_kwargs(divergence))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_fused_hard_label_term(divergence, backend):
    z, u = logits(6, 777), logits(6, 777, seed=11)
    assert_matches_oracle(
        z,
        u,
        divergence,
        backend,
        labels=some_ignored(6, vocab=777),
        hard_label_weight=0.3,
        temperature=1.5,
        **family_kwargs(divergence),
    )


def _padded(z: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-inf in both models at the padded tail of the vocabulary and at a few interior positions."""
    z, u = z.clone(), u.clone()
    for x in (z, u):
        x[..., -37:] = float("-inf")
        x[..., 5:9] = float("-inf")
    return z, u


def _huge_gaps(z: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z, u = z * 40.0, u * 40.0
    z[..., 3] += 150.0
    u[..., 10] += 150.0
    return z, u


EDGE_CASES = {
    "single_token": lambda: (logits(1, 1271), logits(1, 1271, seed=2), {}),
    "all_ignored": lambda: (
        logits(3, 100),
        logits(3, 100, seed=2),
        {"labels": torch.full((3,), -100, device=DEVICE)},
    ),
    "all_masked_sum": lambda: (
        logits(3, 100),
        logits(3, 100, seed=2),
        {"mask": torch.zeros(3, dtype=torch.bool, device=DEVICE), "reduction": "sum"},
    ),
    "neg_inf_logits": lambda: (*_padded(logits(3, 1271), logits(3, 1271, seed=2)), {}),
    "huge_logit_gaps": lambda: (*_huge_gaps(logits(3, 1271), logits(3, 1271, seed=2)), {}),
    "low_temperature": lambda: (logits(3, 4097), logits(3, 4097, seed=2), {"temperature": 0.5}),
    "tiny_vocab": lambda: (logits(5, 2), logits(5, 2, seed=2), {}),
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_edge_cases(divergence, backend, case):
    z, u, options = EDGE_CASES[case]()
    assert_matches_oracle(z, u, divergence, backend, grad_output=1.3, **options, **family_kwargs(divergence))


# V > 65536: Qwen's 151936, one row (the rows are independent). AKL's threshold search reads the row
# about nine times in narrow tiles, which the interpreter runs slowly: 65600 crosses 2^16 the same way.
WIDE_VOCAB = {"akl": 65600}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_wide_vocabulary(divergence, backend):
    vocab = WIDE_VOCAB.get(divergence, 151936)
    z, u = logits(1, vocab), logits(1, vocab, seed=2)
    assert_matches_oracle(z, u, divergence, backend, grad_output=1.3, **family_kwargs(divergence))


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_dtypes_and_non_contiguous_inputs(backend):
    z = logits(40, 8).T  # [8, 40], stride 1 along the tokens: not unit stride along V
    u = logits(8, 40, seed=4, dtype=torch.bfloat16)
    assert_matches_oracle(z, u, "jsd", backend, beta=0.4)


@pytest.mark.parametrize("vocab", [10, 3000])
@pytest.mark.parametrize("backend", BACKENDS)
def test_akl_ties_at_the_head_boundary_follow_stable_sort_order(backend, vocab):
    """Tied teacher tokens straddling μ join the head in index order (stable descending sort + cumsum),
    also when the tied tokens lie in different vocabulary tiles."""
    probs = torch.full((vocab,), 1e-12, dtype=torch.float64)
    spots = torch.linspace(1, vocab - 1, 8).long()
    probs[0] = 0.2
    probs[spots[:7]] = 0.1
    probs[spots[7]] = 0.1 - 1e-12 * (vocab - 8)
    teacher = probs.log().float().expand(2, vocab).contiguous().to(DEVICE)
    student = logits(2, vocab, seed=9)
    assert_matches_oracle(student, teacher, "akl", backend, mu=0.45)
    assert_matches_oracle(student, teacher, "akl", backend, mu=0.75)
