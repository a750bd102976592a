"""Fused-linear KD: bad input, registration (opcheck, torch.compile), memory, autocast and the module."""

from __future__ import annotations

import pytest
import torch

import fastkd.losses as L
from bench.memory import measure
from fastkd.ops.fused_linear import fused_linear_fwd
from tests.conftest import DEVICE
from tests.fused_linear_helpers import CPU_BACKEND, make_case
from tests.helpers import HAS_TRITON

CASE = make_case()
H, W, U = CASE["hidden"], CASE["weight"], CASE["teacher_logits"]
TH, TW = CASE["teacher_hidden"], CASE["teacher_weight"]
IDX, LP = CASE["topk"]

BAD_INPUTS = [
    (
        "hidden size",
        lambda: L.fused_linear_kd(H, W[:, :5], teacher_logits=U),
        ValueError,
        r"hidden size H = 8",
    ),
    (
        "teacher hidden size",
        lambda: L.fused_linear_kd(H, W, TH, TW[:, :3]),
        ValueError,
        r"teacher_weight must be",
    ),
    (
        "vocabulary",
        lambda: L.fused_linear_kd(H, W, TH, torch.randn(40, 12)),
        ValueError,
        r"has 40 ids but the student's has 37.*slice",
    ),
    (
        "logits vocabulary",
        lambda: L.fused_linear_kd(H, W, teacher_logits=U[..., :30]),
        ValueError,
        r"30 ids.*37.*weight\[:30\]",
    ),
    ("no teacher", lambda: L.fused_linear_kd(H, W), ValueError, r"exactly one teacher source.*none"),
    (
        "no teacher with some KD",
        lambda: L.fused_linear_kd(H, W, labels=IDX[..., 0], hard_label_weight=0.9),
        ValueError,
        r"exactly one teacher source.*hard_label_weight=1; got 0.9",
    ),
    (
        "teacher transform without a teacher",
        lambda: L.fused_linear_kd(H, W, labels=IDX[..., 0], hard_label_weight=1.0, teacher_softcap=2.0),
        ValueError,
        r"not to no teacher",
    ),
    (
        "no teacher without labels",
        lambda: L.fused_linear_kd(H, W, hard_label_weight=1.0),
        ValueError,
        r"needs labels",
    ),
    (
        "two teachers",
        lambda: L.fused_linear_kd(H, W, TH, TW, teacher_logits=U),
        ValueError,
        r"\['hidden', 'logits'\]",
    ),
    (
        "half a teacher",
        lambda: L.fused_linear_kd(H, W, TH),
        ValueError,
        r"both teacher_hidden and teacher_weight",
    ),
    (
        "softcap",
        lambda: L.fused_linear_kd(H, W, teacher_logits=U, student_softcap=0.0),
        ValueError,
        r"student_softcap must be > 0",
    ),
    (
        "teacher softcap",
        lambda: L.fused_linear_kd(H, W, teacher_logits=U, teacher_softcap=-1.0),
        ValueError,
        r"teacher_softcap must be > 0",
    ),
    (
        "scale",
        lambda: L.fused_linear_kd(H, W, teacher_logits=U, student_logit_scale=0.0),
        ValueError,
        r"student_logit_scale must be > 0",
    ),
    (
        "int hidden",
        lambda: L.fused_linear_kd(H.long(), W, teacher_logits=U),
        TypeError,
        r"student_hidden must be a floating",
    ),
    (
        "device",
        lambda: L.fused_linear_kd(H, W.to("meta"), teacher_logits=U),
        ValueError,
        r"student_weight is on meta",
    ),
    (
        "leading shape",
        lambda: L.fused_linear_kd(H, W, teacher_logits=U[:1]),
        ValueError,
        r"leading shape \(2, 5\)",
    ),
    (
        "topk divergence",
        lambda: L.fused_linear_kd(H, W, teacher_topk_indices=IDX, teacher_topk_logprobs=LP, divergence="jsd"),
        ValueError,
        r"sparse forward KL",
    ),
    (
        "taid without t",
        lambda: L.fused_linear_kd(H, W, teacher_logits=U, divergence="taid"),
        ValueError,
        r"t is the interpolation weight",
    ),
    (
        "chunk size",
        lambda: L.fused_linear_kd(H, W, teacher_logits=U, chunk_size=0),
        ValueError,
        r"chunk_size must be >= 1",
    ),
    (
        "hard labels",
        lambda: L.fused_linear_kd(H, W, teacher_logits=U, hard_label_weight=0.5),
        ValueError,
        r"needs labels",
    ),
]


@pytest.mark.parametrize("name,call,error,message", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_a_clear_error(name, call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_logit_level_losses_give_the_same_vocabulary_message():
    with pytest.raises(ValueError, match=r"same shape.*has 40 ids but the student's has 37.*slice"):
        L.kd_loss(torch.randn(3, 37), torch.randn(3, 40))


def _op_args(need_grad: bool, kind: str = "divergence") -> tuple:
    """The op's arguments; kind "ce" (no teacher) drops the teacher logits and has weight 1."""
    ce = kind == "ce"
    valid = torch.tensor([True, False, True, True, True, False], device=DEVICE)
    h, w = H.reshape(-1, 8)[:6], W
    labels = torch.arange(6, device=DEVICE)
    scale = torch.tensor(0.25, device=DEVICE)
    return (
        h,
        w,
        CASE["bias"],
        None,
        None,
        None,
        None if ce else U.reshape(-1, 37)[:6],
        None,
        None,
        None,
        valid,
        labels,
        None,
        scale,
        kind,
        "jsd",
        0.3,
        1.5,
        1.0 if ce else 0.2,
        True,
        [1.2, 3.0, 1.0, 0.0],
        4,
        "cpu",
        torch.float32,
        torch.float32,
        need_grad,
    )


@pytest.mark.skipif(DEVICE != "cpu", reason="the op's CPU kernels")
@pytest.mark.parametrize("need_grad,kind", [(True, "divergence"), (False, "divergence"), (True, "ce")])
def test_opcheck(need_grad, kind):
    tests = ("test_schema", "test_faketensor", "test_aot_dispatch_static", "test_aot_dispatch_dynamic")
    torch.library.opcheck(fused_linear_fwd, _op_args(need_grad, kind), test_utils=tests)


@pytest.mark.parametrize(
    "backend",
    [CPU_BACKEND, pytest.param("triton", marks=pytest.mark.skipif(not HAS_TRITON, reason="no triton"))],
)
def test_compile_fullgraph_matches_eager(backend):
    labels = torch.tensor([[-100, 1, 2, 3, 4], [5, 6, -100, 8, 9]], device=DEVICE)

    def step(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return L.fused_linear_kd(
            h, w, TH, TW, labels=labels, chunk_size=3, student_softcap=3.0, backend=backend
        )

    results = []
    for fn in (step, torch.compile(step, backend="aot_eager", fullgraph=True)):
        h, w = H.clone().requires_grad_(), W.clone().requires_grad_()
        loss = fn(h, w)
        loss.backward()
        results.append((loss.detach(), h.grad, w.grad))
    for eager, compiled in zip(*results, strict=True):
        torch.testing.assert_close(compiled, eager)


def _fused_step(n: int, vocab: int, hidden: int, backend: str, **options):
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(n, hidden, generator=gen).to(DEVICE).requires_grad_()
    w = (torch.randn(vocab, hidden, generator=gen) / hidden**0.5).to(DEVICE).requires_grad_()
    th = torch.randn(n, hidden, generator=gen).to(DEVICE)
    tw = torch.randn(vocab, hidden, generator=gen).to(DEVICE) / hidden**0.5

    def step() -> None:
        h.grad = w.grad = None
        L.fused_linear_kd(h, w, th, tw, backend=backend, **options).backward()

    step()
    return step


@pytest.mark.skipif(DEVICE != "cpu", reason="CPU memory via the profiler")
def test_cpu_peak_memory_far_below_one_logits_tensor():
    n, vocab, hidden = 8192, 32000, 16
    use = measure(_fused_step(n, vocab, hidden, "cpu", chunk_size=256), DEVICE)
    gradients = (n + vocab) * hidden * 4
    logits = n * vocab * 4
    assert use.peak is not None and use.peak - gradients <= logits / 10, (use.peak, logits)


@pytest.mark.skipif(not HAS_TRITON, reason="no triton")
def test_triton_path_allocates_no_vocabulary_sized_tensor():
    n, vocab, hidden, chunk = 48, 3000, 16, 8
    use = measure(_fused_step(n, vocab, hidden, "triton", chunk_size=chunk), DEVICE)
    gradients = (n + vocab) * hidden * 4
    assert max(use.allocations) <= max(chunk * vocab, vocab * hidden) * 4, max(use.allocations)
    # chunk buffers only: student and teacher logits, and under the interpreter the first launch's
    # two arguments, which Triton keeps alive
    assert use.peak - gradients <= 4 * chunk * vocab * 4 + 4096, use.peak


@pytest.mark.skipif(DEVICE != "cpu", reason="CPU autocast")
def test_autocast_runs_the_gemms_in_its_dtype():
    h, w = H.clone().requires_grad_(), W.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = L.fused_linear_kd(h, w, teacher_logits=U, backend="cpu")
    loss.backward()
    exact = L.fused_linear_kd(H.bfloat16().float(), W.bfloat16().float(), teacher_logits=U, backend="torch")
    assert loss.dtype == torch.float32 and h.grad.dtype == torch.float32
    torch.testing.assert_close(loss, exact, atol=1e-5, rtol=1e-5)


def test_grad_weight_dtype_no_grad_and_one_backward():
    w = W.bfloat16().requires_grad_()
    loss = L.fused_linear_kd(H.bfloat16(), w, teacher_logits=U, grad_weight_dtype=torch.bfloat16)
    loss.backward(retain_graph=True)
    assert w.grad.dtype == torch.bfloat16 and w.grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match="one backward per forward"):
        loss.backward()
    with torch.no_grad():
        assert L.fused_linear_kd(H, W, teacher_logits=U).item() > 0


def test_module_matches_function():
    criterion = L.FusedLinearKDLoss("skew_kl", alpha=0.2, student_softcap=5.0, chunk_size=3)
    assert "skew_kl" in repr(criterion) and "alpha=0.2" in repr(criterion)
    expected = L.fused_linear_kd(H, W, TH, TW, divergence="skew_kl", alpha=0.2, student_softcap=5.0)
    torch.testing.assert_close(criterion(H, W, TH, TW), expected)
    torch.testing.assert_close(
        L.FusedLinearKDLoss("taid")(H, W, teacher_logits=U, t=0.5, backend="torch"),
        L.fused_linear_kd(H, W, teacher_logits=U, divergence="taid", t=0.5, backend="torch"),
    )
    with pytest.raises(TypeError, match="per-call"):
        L.FusedLinearKDLoss(teacher_logits=U)
