"""Forward+backward of fused-linear KD (hidden states + LM-head weights) against the peers.

Run ``python -m pytest bench/bench_fused_linear.py --benchmark-json=out.json``; ``python -m
bench.report out.json`` tabulates it. Providers, side by side in one session:

- ``fastkd-triton`` / ``fastkd-cpu``: ``fused_linear_kd`` with a hidden-state teacher;
- ``torch-eager``: materialise both logits, then the loss (``backend="torch"``, the reference);
- ``torch-compile``: ``torch.compile(fullgraph=True)`` of that same call;
- ``trl``: TRL's ``trl.kernels.chunked_divergence.ChunkedDivergenceFunction`` (TRL >= 1.16; the JSD β
  family: β = 0 is forward KL), token mean of its per-token divergence; runs on CPU too;
- ``liger``: Liger-Kernel's chunked ``LigerFusedLinearJSDLoss`` (jsd) on CUDA, where installed;
- ``orda``: orda-kernel's ``distillation_loss`` with a ``SeparateTeacher`` (KL term only; forward KL,
  jsd as its ``skew_js`` with ``kl_beta`` = 1 − β), where installed. On CUDA its fused Triton kernel;
  on CPU its torch path, which materialises the [N, V] logits. Its KL is scaled by T² (Hinton), ours
  is not: the benchmark runs at T = 1, where the two agree.

``test_peer_matches_fastkd`` checks, at a small fp32 shape, that every installed peer gives our loss
and gradients (w.r.t. hidden and weight) before any of them is timed.

``extra_info`` has the useful TFLOP/s, 2·N·V·(H_t + 3·H_s) over the median (teacher and student logits,
then d hidden and d weight), and the peak memory beyond the inputs and the gradients (d hidden in the
input dtype, d weight counted as fp32; ``extra_mem_bytes``). Shapes: ``FASTKD_BENCH_FUSED_SHAPES`` =
"N:H_s:H_t:V,..." or the defaults (CPU: 2048:256:512:32000 fp32; CUDA: N in 2048, 8192, 16384 with
2048:4096:128256 bf16).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

from bench.common import DEVICE, compiled, device_name, memory_info, time_step
from bench.shapes import dtype_name
from fastkd.backends import extension_available
from fastkd.losses import fused_linear_kd

PROVIDERS = ("fastkd-triton", "fastkd-cpu", "torch-eager", "torch-compile", "trl", "liger", "orda")
PEERS = ("torch-eager", "trl", "liger", "orda")
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32
CASES = {"forward_kl": 0.0, "jsd": 0.5}  # divergence -> TRL / Liger β (teacher weight)


class FusedShape(NamedTuple):
    n: int
    h_s: int
    h_t: int
    v: int


def fused_shapes() -> list[FusedShape]:
    text = os.environ.get("FASTKD_BENCH_FUSED_SHAPES", "").strip()
    if text:
        return [FusedShape(*(int(x) for x in item.split(":"))) for item in text.split(",")]
    if DEVICE == "cuda":
        return [FusedShape(n, 2048, 4096, 128256) for n in (2048, 8192, 16384)]
    return [FusedShape(2048, 256, 512, 32000)]


def _inputs(shape: FusedShape, dtype: torch.dtype = DTYPE) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(DEVICE).manual_seed(0)

    def randn(*size: int, scale: float = 1.0) -> torch.Tensor:
        return (scale * torch.randn(*size, device=DEVICE, generator=g)).to(dtype)

    h = randn(shape.n, shape.h_s).requires_grad_()
    w = randn(shape.v, shape.h_s, scale=shape.h_s**-0.5).requires_grad_()
    return h, w, randn(shape.n, shape.h_t), randn(shape.v, shape.h_t, scale=2.0 * shape.h_t**-0.5)


def _fastkd(divergence: str, backend: str):
    beta = {"beta": CASES[divergence]} if divergence == "jsd" else {}
    return lambda h, w, th, tw: fused_linear_kd(h, w, th, tw, divergence=divergence, backend=backend, **beta)


def _trl(divergence: str):
    chunked = pytest.importorskip("trl.kernels.chunked_divergence")
    beta = CASES[divergence]
    return lambda h, w, th, tw: chunked.ChunkedDivergenceFunction.apply(h, w, None, th, tw, None, beta)[
        0
    ].mean()


def _liger(divergence: str):
    if DEVICE != "cuda" or divergence != "jsd":
        pytest.skip("Liger's chunked fused-linear JSD runs on CUDA, for jsd")
    liger = pytest.importorskip("liger_kernel.chunked_loss")
    loss = liger.LigerFusedLinearJSDLoss(
        jsd_beta=CASES[divergence], weight_hard_loss=0.0, weight_soft_loss=1.0
    )
    return lambda h, w, th, tw: loss(h, w, th, tw, torch.zeros(h.shape[0], dtype=torch.long, device=h.device))


def _orda(divergence: str):
    orda = pytest.importorskip("orda_kernel")
    variant = {"kl_divergence": "forward"}
    if divergence == "jsd":  # its mixture weight is the student's: kl_beta = 1 - our β
        variant = {"kl_divergence": "skew_js", "kl_beta": 1.0 - CASES[divergence]}
    backend = "triton" if DEVICE == "cuda" else "torch"  # torch: its CPU path (materialises logits)

    def loss(h: torch.Tensor, w: torch.Tensor, th: torch.Tensor, tw: torch.Tensor) -> torch.Tensor:
        labels = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)  # CE weight 0: unused
        teacher = orda.SeparateTeacher(th, tw)
        return orda.distillation_loss(
            h,
            w,
            labels,
            teacher,
            kl_weight=1.0,
            student_ce_weight=0.0,
            kl_temperature=1.0,
            backend=backend,
            **variant,
        ).loss

    return loss


def loss_for(provider: str, divergence: str):
    if provider == "fastkd-triton":
        if DEVICE != "cuda":
            pytest.skip("fastkd-triton needs CUDA")
        return _fastkd(divergence, "triton")
    if provider == "fastkd-cpu":
        if DEVICE != "cpu" or not extension_available():
            pytest.skip("fastkd-cpu needs CPU tensors and fastkd._C")
        return _fastkd(divergence, "cpu")
    if provider == "torch-eager":
        return _fastkd(divergence, "torch")
    if provider == "torch-compile":
        return compiled(_fastkd(divergence, "torch"))
    return {"trl": _trl, "liger": _liger, "orda": _orda}[provider](divergence)


def useful_flops(shape: FusedShape) -> int:
    """Teacher and student logits, d hidden and d weight: 2·N·V·(H_t + 3·H_s)."""
    return 2 * shape.n * shape.v * (shape.h_t + 3 * shape.h_s)


def _gradients(shape: FusedShape) -> int:
    """The gradients that must exist (d hidden in the dtype, d weight as fp32). The measured peak
    counts allocations during the step only, so the inputs are not in it."""
    return shape.n * shape.h_s * DTYPE.itemsize + shape.v * shape.h_s * 4


@pytest.mark.parametrize("shape", fused_shapes(), ids=lambda s: f"N{s.n}-Hs{s.h_s}-Ht{s.h_t}-V{s.v}")
@pytest.mark.parametrize("divergence", list(CASES))
@pytest.mark.parametrize("provider", PROVIDERS)
def test_fused_linear(benchmark: BenchmarkFixture, provider: str, divergence: str, shape: FusedShape) -> None:
    if (
        DEVICE == "cpu"
        and divergence != "forward_kl"
        and os.environ.get("FASTKD_BENCH_FUSED_ALL", "0") != "1"
    ):
        pytest.skip("on CPU only forward_kl by default (FASTKD_BENCH_FUSED_ALL=1 for all)")
    loss_fn = loss_for(provider, divergence)
    h, w, th, tw = _inputs(shape)

    def step() -> None:  # time_step clears h.grad between rounds; w.grad accumulates in place
        loss_fn(h, w, th, tw).backward()
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    median, memory = time_step(benchmark, step, h, provider, f"fused_linear-{divergence}-N{shape.n}")
    flops = useful_flops(shape)
    benchmark.extra_info.update(
        {
            "provider": provider,
            "divergence": f"fused_linear {divergence}",
            "N": shape.n,
            "V": shape.v,
            "H_s": shape.h_s,
            "H_t": shape.h_t,
            "dtype": dtype_name(DTYPE),
            "device": device_name(),
            "useful_flops": flops,
            "tflops": flops / median / 1e12 if median else None,
            "bytes_moved": _gradients(shape),
            **memory_info(memory, _gradients(shape)),
        }
    )


@pytest.mark.parametrize("divergence", list(CASES))
@pytest.mark.parametrize("provider", PEERS)
def test_peer_matches_fastkd(provider: str, divergence: str) -> None:
    """Loss and gradients (hidden, weight) of the peer equal fastkd's at a small fp32 shape."""
    fastkd = "triton" if DEVICE == "cuda" else ("cpu" if extension_available() else "torch")
    results = []
    for fn in (_fastkd(divergence, fastkd), loss_for(provider, divergence)):
        h, w, th, tw = _inputs(FusedShape(64, 32, 48, 1000), torch.float32)
        loss = fn(h, w, th, tw)
        results.append((loss.detach(), *torch.autograd.grad(loss, (h, w))))
    for name, got, ours in zip(("loss", "d hidden", "d weight"), results[1], results[0], strict=True):
        torch.testing.assert_close(
            got, ours, rtol=2e-4, atol=1e-6, msg=lambda m, n=name: f"{provider} {n}: {m}"
        )
