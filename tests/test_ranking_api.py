"""RLKD's API: bad input, modules, torch.library registration, torch.compile, memory, AOT compilation."""

from __future__ import annotations

import pytest
import torch

import fastkd.losses as L
from bench.memory import measure
from fastkd.ops.ranking import MAX_FUSED_K, topk_union
from tests.conftest import DEVICE, assert_compiled_without_spills
from tests.helpers import HAS_TRITON, compiled_and_eager
from tests.test_divergence import logits

needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="no triton")


@pytest.mark.parametrize(
    "k, error, words",
    [
        (0, ValueError, "k=0"),
        (-2, ValueError, "k=-2"),
        (51, ValueError, "k=51"),
        (2.0, TypeError, "float"),
        (True, TypeError, "bool"),
        (None, TypeError, "NoneType"),
    ],
)
@pytest.mark.parametrize("fn", ["ranking_loss", "rlkd"])
def test_bad_k_raises_naming_it(fn, k, error, words):
    z, u = logits(2, 50), logits(2, 50, seed=1)
    with pytest.raises(error, match=words):
        getattr(L, fn)(z, u, k=k)


def test_bad_options_raise():
    z, u = logits(2, 50), logits(2, 50, seed=1)
    with pytest.raises(ValueError, match="same shape"):
        L.ranking_loss(z, u[:, :49])
    with pytest.raises(ValueError, match="reduction"):
        L.ranking_loss(z, u, reduction="avg")
    with pytest.raises(ValueError, match="divergence"):
        L.rlkd(z, u, divergence="kl")
    with pytest.raises(TypeError, match="beta"):
        L.rlkd(z, u, divergence="forward_kl", beta=0.3)
    with pytest.raises(ValueError, match="temperature"):
        L.rlkd(z, u, temperature=0.0)
    with pytest.raises(ValueError, match="backend"):
        L.ranking_loss(z, u, backend="numpy")
    with pytest.raises(TypeError, match="k must be a Python int"):
        L.RankingLoss(k=1.5)
    with pytest.raises(ValueError, match="k must be >= 1"):
        L.RLKDLoss(k=0)
    with pytest.raises(TypeError, match="per-call"):
        L.RLKDLoss(labels=torch.zeros(2))
    with pytest.raises(ValueError, match="beta must lie"):
        L.RLKDLoss(divergence="jsd", beta=2.0)


@needs_triton
def test_fused_k_limit():
    z, u = logits(2, 100), logits(2, 100, seed=1)
    with pytest.raises(ValueError, match=f"k <= {MAX_FUSED_K}"):
        L.ranking_loss(z, u, k=MAX_FUSED_K + 1, backend="triton")
    auto = L.ranking_loss(z, u, k=MAX_FUSED_K + 1)
    assert torch.allclose(auto, L.ranking_loss(z, u, k=MAX_FUSED_K + 1, backend="torch"))


def test_modules_match_functions():
    z, u = logits(3, 4, 60), logits(3, 4, 60, seed=1)
    labels = torch.randint(0, 60, (3, 4)).masked_fill(torch.eye(3, 4, dtype=torch.bool), -100)
    criterion = L.RLKDLoss(k=3, divergence="jsd", beta=0.3, temperature=2.0, backend="torch")
    expected = L.rlkd(z, u, k=3, divergence="jsd", beta=0.3, temperature=2.0, labels=labels, backend="torch")
    assert torch.equal(criterion(z, u, labels=labels), expected)
    ranking = L.RankingLoss(k=2, reduction="sum", backend="torch")
    assert torch.equal(ranking(z, u), L.ranking_loss(z, u, k=2, reduction="sum", backend="torch"))
    assert "k=3" in repr(criterion) and "jsd" in repr(criterion)


def test_rlkd_is_ranking_plus_half_the_divergence():
    z, u = logits(5, 80), logits(5, 80, seed=1)
    kd = L.kd_loss(z, u, "reverse_kl", temperature=1.5, backend="torch")
    rank = L.ranking_loss(z, u, k=4, backend="torch")
    total = L.rlkd(z, u, k=4, divergence="reverse_kl", temperature=1.5, backend="torch")
    assert torch.allclose(total, rank + kd / 2)


@needs_triton
def test_opcheck_topk_union():
    z, u = logits(4, 300), logits(4, 300, seed=1)
    valid = torch.tensor([True, False, True, True], device=DEVICE)
    torch.library.opcheck(
        topk_union,
        (z, u, valid, 5),
        test_utils=(
            "test_schema",
            "test_faketensor",
            "test_aot_dispatch_static",
            "test_aot_dispatch_dynamic",
        ),
    )
    assert torch.ops.fastkd.topk_union.default is not None


@needs_triton
@pytest.mark.parametrize("fn", ["ranking_loss", "rlkd"])
def test_torch_compile_fullgraph_matches_eager(fn):
    z, u = logits(2, 3, 257), logits(2, 3, 257, seed=1)
    labels = torch.tensor([[1, -100, 3], [4, 5, -100]], device=DEVICE)

    def step(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return getattr(L, fn)(student * 2.0, teacher, k=4, labels=labels, backend="triton").sum()

    loss, compiled_grad, eager_grad = compiled_and_eager(step, z, u)
    assert torch.allclose(loss, step(z, u), rtol=1e-6)
    assert torch.allclose(compiled_grad, eager_grad, rtol=1e-5, atol=1e-9)


@needs_triton
@pytest.mark.parametrize("fn", ["ranking_loss", "rlkd"])
def test_no_full_size_fp32_buffer(fn):
    """bf16 inputs: the fused path allocates nothing [N, V]-sized but the bf16 student gradient (and the
    measurement does see the torch backend's [N, V] fp32 buffers)."""
    rows, vocab = 4, 4096
    z = logits(rows, vocab, dtype=torch.bfloat16).requires_grad_()
    u = logits(rows, vocab, dtype=torch.bfloat16, seed=1)

    def step(backend: str) -> None:
        z.grad = None
        getattr(L, fn)(z, u, k=5, backend=backend).backward()

    step("triton")
    gradient = rows * vocab * 2
    per_row = 16 * (2 * 5) ** 2 * 8  # the soft-rank work on [N, 2k, 2k] fp64 tensors: O(N·k²), not O(V)
    fused = measure(lambda: step("triton"), DEVICE)
    assert fused.peak is not None and fused.peak <= gradient + rows * per_row, fused.peak
    assert all(size <= gradient for size in fused.allocations), sorted(fused.allocations)[-3:]
    if DEVICE == "cpu":
        assert max(measure(lambda: step("torch"), DEVICE).allocations) >= rows * vocab * 4


@needs_triton
def test_topk_union_kernel_compiles_without_spills(aot_records):
    mine = assert_compiled_without_spills(aot_records, "ranking")
    assert {r["slots"] for r in mine} == {2, 4, 8, 16, MAX_FUSED_K}
    assert {r["dtype"] for r in mine} == {"bf16", "fp32"}
