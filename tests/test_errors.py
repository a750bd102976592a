"""Bad input raises a clear ValueError / TypeError naming the problem and the values."""

from __future__ import annotations

import pytest
import torch

import fastkd
import fastkd.losses as L
from tests.helpers import HAS_CPU_EXTENSION

Z = torch.randn(2, 3, 11)
U = torch.randn(2, 3, 11)

CASES = [
    (
        "shape",
        lambda: L.forward_kl(Z, torch.randn(2, 3, 12)),
        ValueError,
        r"same shape.*\(2, 3, 11\).*\(2, 3, 12\)",
    ),
    (
        "labels shape",
        lambda: L.forward_kl(Z, U, labels=torch.zeros(2, 4, dtype=torch.long)),
        ValueError,
        r"labels must have the logits' leading shape \(2, 3\), got \(2, 4\)",
    ),
    (
        "mask shape",
        lambda: L.forward_kl(Z, U, mask=torch.ones(6, dtype=torch.bool)),
        ValueError,
        r"mask must have .*\(2, 3\), got \(6,\)",
    ),
    (
        "mask dtype",
        lambda: L.forward_kl(Z, U, mask=torch.ones(2, 3)),
        TypeError,
        r"mask must be a bool or integer \(0/1\) tensor",
    ),
    (
        "labels dtype",
        lambda: L.forward_kl(Z, U, labels=torch.zeros(2, 3)),
        TypeError,
        r"labels must be an integer",
    ),
    ("beta", lambda: L.jsd(Z, U, beta=1.5), ValueError, r"beta must lie in \[0, 1\], got 1.5"),
    ("alpha", lambda: L.skew_kl(Z, U, alpha=-0.1), ValueError, r"alpha must lie in \[0, 1\], got -0.1"),
    (
        "alpha reverse",
        lambda: L.skew_reverse_kl(Z, U, alpha=2.0),
        ValueError,
        r"alpha must lie in \[0, 1\], got 2.0",
    ),
    ("mu", lambda: L.akl(Z, U, mu=1.2), ValueError, r"mu must lie in \[0, 1\], got 1.2"),
    (
        "temperature zero",
        lambda: L.forward_kl(Z, U, temperature=0.0),
        ValueError,
        r"temperature must be > 0, got 0.0",
    ),
    (
        "temperature negative",
        lambda: L.tvd(Z, U, temperature=-2.0),
        ValueError,
        r"temperature must be > 0, got -2.0",
    ),
    (
        "temperature nan",
        lambda: L.tvd(Z, U, temperature=float("nan")),
        ValueError,
        r"temperature must be finite",
    ),
    (
        "temperature tensor",
        lambda: L.tvd(Z, U, temperature=torch.tensor(2.0)),
        TypeError,
        r"temperature must be a",
    ),
    ("reduction", lambda: L.forward_kl(Z, U, reduction="avg"), ValueError, r"unknown reduction 'avg'"),
    ("divergence", lambda: L.kd_loss(Z, U, "kl"), ValueError, r"unknown divergence 'kl'"),
    (
        "wrong parameter",
        lambda: L.kd_loss(Z, U, "tvd", beta=0.3),
        TypeError,
        r"'tvd' takes no parameter 'beta'",
    ),
    (
        "integer logits",
        lambda: L.forward_kl(Z.long(), U),
        TypeError,
        r"student_logits must be a floating tensor.*int64",
    ),
    (
        "integer teacher",
        lambda: L.forward_kl(Z, U.int()),
        TypeError,
        r"teacher_logits must be a floating.*int32",
    ),
    (
        "not a tensor",
        lambda: L.forward_kl(Z.tolist(), U),
        TypeError,
        r"student_logits must be a torch.Tensor",
    ),
    (
        "scalar logits",
        lambda: L.forward_kl(torch.tensor(1.0), torch.tensor(1.0)),
        ValueError,
        r"\[\.\.\., V\]",
    ),
    ("backend", lambda: L.forward_kl(Z, U, backend="jax"), ValueError, r"unknown backend 'jax'"),
    (
        "mixed devices",
        lambda: L.forward_kl(Z, U.to("meta")),
        ValueError,
        r"student_logits is on cpu but teacher_logits is on meta",
    ),
    (
        "labels device",
        lambda: L.forward_kl(Z, U, labels=torch.zeros(2, 3, dtype=torch.long, device="meta")),
        ValueError,
        r"labels is on meta",
    ),
    (
        "hard weight without labels",
        lambda: L.forward_kl(Z, U, hard_label_weight=0.5),
        ValueError,
        r"needs labels",
    ),
    (
        "hard weight range",
        lambda: L.forward_kl(Z, U, hard_label_weight=1.5),
        ValueError,
        r"hard_label_weight must lie",
    ),
    (
        "label out of range",
        lambda: L.forward_kl(Z, U, labels=torch.full((2, 3), 11), hard_label_weight=0.5),
        ValueError,
        r"labels of valid tokens must lie in \[0, 11\).*\[11, 11",
    ),
    (
        "num_items zero",
        lambda: L.forward_kl(Z, U, num_items_in_batch=0),
        ValueError,
        r"num_items_in_batch must be >= 1",
    ),
    (
        "num_items type",
        lambda: L.forward_kl(Z, U, num_items_in_batch=2.5),
        TypeError,
        r"num_items_in_batch must be an int",
    ),
    (
        "module per-call option",
        lambda: L.ForwardKLLoss(labels=torch.zeros(2)),
        TypeError,
        r"per-call arguments",
    ),
    ("module bad option", lambda: L.JSDLoss(beta=-1.0), ValueError, r"beta must lie in \[0, 1\], got -1.0"),
    ("module bad reduction", lambda: L.TVDLoss(reduction="max"), ValueError, r"unknown reduction 'max'"),
]


@pytest.mark.parametrize("call, error, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_ignored_tokens_may_carry_any_label_with_the_hard_term():
    labels = torch.tensor([[0, -100, 10], [3, -100, 1]])
    assert torch.isfinite(L.forward_kl(Z, U, labels=labels, hard_label_weight=0.5))


def test_a_backend_without_kernels_for_the_loss_says_so():
    with pytest.raises(ValueError, match=r"backend 'cuda' has no kernels for this loss; use one of"):
        L.taid(Z, U, 0.5, backend="cuda")
    with pytest.raises(ValueError, match=r"backend 'cuda' has no kernels for this loss; use one of"):
        L.sparse_kl(Z, *fastkd.teacher_topk(U, 3), backend="cuda")
    with pytest.raises(ValueError, match=r"backend 'cpu' has no kernels for this loss"):
        L.ranking_loss(Z, U, backend="cpu")


def test_auto_and_the_environment_pick_only_backends_the_loss_has(monkeypatch):
    monkeypatch.setenv("FASTKD_BACKEND", "cpu")
    student = Z.clone().requires_grad_()
    L.ranking_loss(student, U).backward()
    expected = Z.clone().requires_grad_()
    L.ranking_loss(expected, U, backend="torch").backward()
    assert torch.allclose(student.grad, expected.grad, atol=1e-6)
    monkeypatch.setenv("FASTKD_BACKEND", "jax")
    with pytest.raises(ValueError, match=r"unknown backend 'jax'"):
        L.forward_kl(Z, U)


@pytest.mark.skipif(HAS_CPU_EXTENSION, reason="fastkd._C is built here")
def test_unbuilt_cpu_extension_says_so():
    with pytest.raises(
        RuntimeError, match=r"backend 'cpu' needs the C\+\+ extension fastkd\._C, which is not"
    ):
        L.forward_kl(Z, U, backend="cpu")


@pytest.mark.skipif(not HAS_CPU_EXTENSION, reason="fastkd._C is not built")
def test_cpu_backend_rejects_float64_and_other_devices():
    with pytest.raises(TypeError, match=r"backend 'cpu' takes float32, bfloat16 or float16 .*float64"):
        L.forward_kl(Z.double(), U.double(), backend="cpu")
    with pytest.raises(RuntimeError, match=r"backend 'cpu' needs CPU tensors, got meta"):
        L.forward_kl(Z.to("meta"), U.to("meta"), backend="cpu")


def test_triton_backend_rejects_float64():
    with pytest.raises(
        TypeError, match=r"backend 'triton' takes float32, bfloat16 or float16 logits, got torch\.float64"
    ):
        L.forward_kl(Z.double(), U.double(), backend="triton")
