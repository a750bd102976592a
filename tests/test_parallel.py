"""Vocabulary-parallel losses on 2 and 3 gloo processes equal the single-process loss on the
concatenated logits (the sparse KL: with global top-k indices), and the fused-linear one the
single-process fused-linear loss on the stacked weights (tests/parallel_worker.py runs the cases;
one start of the workers per world size)."""

from __future__ import annotations

import json
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastkd.backends import extension_available
from tests.parallel_worker import SIZES, worker

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

# Relative to the largest reference entry: a sum-order difference in fp32, one bf16 rounding.
GRAD_TOL = {"float32": 5e-6, "bfloat16": 2**-7}
LOSS_TOL = 2e-6
# Beyond GRAD_TOL, the self-calibrating rule against fp64: at most twice the single-process error plus
# this (the global log-sum-exps travel as fp32: about one fp32 rounding of |logit| ~ 100).
CALIBRATED_ATOL = 1e-5
# Per row: at most 3 log-sum-exps through two all-reduces, a row sum and a loss term, in fp32.
BYTES_PER_ROW = 8 * 4
# akl also: the row maximum, its owner (int64), at most 9 search rounds of 16 fp32, the tie count
# (int64, all-gathered), 5 row sums.
AKL_BYTES_PER_ROW = 6 * 4 + 4 + 8 + 9 * 16 * 4 + 8 + 5 * 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", params=[2, 3], ids=lambda w: f"{w}ranks")
def run(request, tmp_path_factory) -> tuple[int, list[dict]]:
    world = request.param
    out = tmp_path_factory.mktemp(f"parallel{world}")
    # fork: the workers inherit this process's imported torch (importing it again costs seconds each)
    mp.start_processes(worker, args=(world, _free_port(), str(out)), nprocs=world, start_method="fork")
    return world, [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


def _label(case: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in case.items() if k != "seed")


def test_losses_and_gradients_equal_single_process(run):
    world, ranks = run
    assert len(ranks[0]["results"]) >= (30 if world == 2 else 10)
    for rank in ranks:
        for result in rank["results"]:
            case = result["case"]
            assert result["loss_err"] <= LOSS_TOL, _label(case)
            if result["grad_err"] > GRAD_TOL[case["dtype"]]:  # then no worse than single-process vs fp64
                calibrated = 2 * result["single_grad_err64"] + CALIBRATED_ATOL
                assert result["parallel_grad_err64"] <= calibrated, _label(case)


def test_every_divergence_backend_and_option_is_covered(run):
    world, ranks = run
    cases = [r["case"] for r in ranks[0]["results"]]
    from fastkd.parallel import PARALLEL_DIVERGENCES

    assert {c["divergence"] for c in cases} == {*PARALLEL_DIVERGENCES, "sparse_kl"}
    assert {c["dtype"] for c in cases} == {"float32", "bfloat16"}
    assert any(c.get("ignore_all") for c in cases) and any(c.get("hard") for c in cases)
    assert any(c.get("fused") and c.get("hard") for c in cases)  # vocab_parallel_fused_linear_kd
    taid_cpu = {bool(c.get("fused")) for c in cases if c["divergence"] == "taid" and c["backend"] == "cpu"}
    if extension_available():  # TAID on the C++ kernel's TAID mode (on 2 ranks fused-linear too)
        assert taid_cpu == ({False, True} if world == 2 else {False})
        assert any(c.get("sparse") and c["backend"] == "cpu" for c in cases)
    if world == 2:
        assert {c.get("renormalize") for c in cases if c.get("sparse")} == {True, False}
    if world == 2:
        assert any(c.get("num_items") for c in cases) and {c["backend"] for c in cases} >= {"torch"}
    assert len(set(SIZES[world])) == world  # uneven slices


def test_all_ignored_tokens_give_zero_loss_and_gradient(run):
    _, ranks = run
    ignored = [r for rank in ranks for r in rank["results"] if r["case"].get("ignore_all")]
    assert ignored and all(r["loss_zero"] and r["grad_err"] == 0.0 for r in ignored)


def test_communication_is_per_row_and_backward_has_none(run):
    world, ranks = run
    for rank in ranks:
        for result in rank["results"]:
            layout_bytes = 3 * 8  # one all-gather of (V_r, rows, ok) as int64
            akl = result["case"]["divergence"] == "akl"
            per_row = AKL_BYTES_PER_ROW if akl else BYTES_PER_ROW
            allowed = layout_bytes + per_row * result["rows"] + result.get("hidden_bytes", 0)
            assert result["bytes"] <= allowed, _label(result["case"])
            assert result["calls"] <= (16 if akl else 6), _label(result["case"])
            assert result["backward_calls"] == 0, _label(result["case"])


def test_a_failing_rank_raises_on_every_rank(run):
    world, ranks = run
    assert "must have the same shape" in ranks[1]["faults"]["checks"]
    for rank in (0, *range(2, world)):
        assert "failed its input checks on rank(s) [1]" in ranks[rank]["faults"]["checks"]
    for rank in ranks:
        assert "backend 'cpu' has no kernels for this loss" in rank["faults"]["akl"]
    assert "injected failure inside the loss" in ranks[1]["faults"]["inside"]
    for rank in (0, *range(2, world)):
        assert ranks[rank]["faults"]["inside"].startswith("RuntimeError"), ranks[rank]["faults"]


def test_needs_an_initialised_process_group():
    from fastkd.parallel import vocab_parallel_kd_loss

    if dist.is_initialized():
        pytest.skip("a process group is initialised in this process")
    with pytest.raises(RuntimeError, match=r"initialised torch\.distributed"):
        vocab_parallel_kd_loss(torch.randn(2, 4), torch.randn(2, 4))


def test_nonfinite_rows_follow_the_single_process_conventions(run):
    _, ranks = run
    for rank in ranks:
        for backend, result in rank["nonfinite"].items():
            taid = result.pop("taid")
            assert result["single"]["loss"] == ["nan", "inf"], backend
            assert result["parallel"] == result["single"], backend
            assert result["parallel"]["nan_grad"] and result["parallel"]["zero_grad"], backend
            assert result["parallel"]["finite"], backend
            assert taid["single"]["loss"] == ["nan", "nan"] and taid["single"]["finite"], backend
            assert taid["parallel"] == taid["single"], backend
