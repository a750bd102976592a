"""Checks the fp64 oracle (tests/oracle.py) against mathematical facts, independent of fastkd."""

from __future__ import annotations

import math

import pytest
import torch
from oracle import DIVERGENCES, oracle_kd_loss
from torch import Tensor
from torch.nn.functional import cross_entropy

F64 = torch.float64
INF = float("inf")
CASES = [(d, None) for d in DIVERGENCES] + [
    ("jsd", 0.1),
    ("jsd", 0.9),
    ("skew_kl", 0.5),
    ("skew_reverse_kl", 0.7),
    ("akl", 0.2),
    ("akl", 0.9),
]
IDS = [f"{d}-{p}" for d, p in CASES]


def _logits(*shape: int, seed: int = 0, scale: float = 3.0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=F64) * scale


def _loss_and_grad(student: Tensor, teacher: Tensor, div: str, **kw: object) -> tuple[Tensor, Tensor]:
    s = student.detach().clone().requires_grad_(True)
    loss = oracle_kd_loss(s, teacher, div, **kw)
    loss.sum().backward()
    return loss.detach(), s.grad


def _entropy(u: Tensor, temperature: float = 1.0) -> Tensor:
    logp = torch.log_softmax(u / temperature, -1)
    return -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize(("div", "param"), CASES, ids=IDS)
def test_zero_value_and_gradient_on_equal_inputs(div: str, param: float | None) -> None:
    z = _logits(3, 5, 7)
    loss, grad = _loss_and_grad(z, z.clone(), div, param=param, reduction="none", temperature=1.3)
    expected = _entropy(z, 1.3) if div == "soft_cross_entropy" else torch.zeros(3, 5, dtype=F64)
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, torch.zeros_like(grad), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("div", "param"), CASES, ids=IDS)
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_nonnegative_and_finite(div: str, param: float | None, temperature: float) -> None:
    for seed in range(3):
        z, u = _logits(4, 9, seed=seed), _logits(4, 9, seed=seed + 100)
        loss = oracle_kd_loss(z, u, div, param=param, temperature=temperature, reduction="none")
        assert loss.dtype == F64 and torch.isfinite(loss).all()
        assert (loss >= -1e-12).all()


@pytest.mark.parametrize("div", ["forward_kl", "soft_cross_entropy"])
def test_forward_kl_gradient_is_q_minus_p_over_t(div: str) -> None:
    z, u, t = _logits(2, 3, 11), _logits(2, 3, 11, seed=1), 1.7
    labels = torch.tensor([[1, -100, 4], [-100, 0, 2]])
    _, grad = _loss_and_grad(z, u, div, labels=labels, temperature=t)
    expected = (torch.softmax(z / t, -1) - torch.softmax(u / t, -1)) / t / 4
    expected[labels == -100] = 0.0
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("div", ["reverse_kl", "tvd"])
def test_gradient_identity(div: str) -> None:
    """∂ℓ/∂z_j = (1/T) q_j (h_j − Σ q_i h_i), h = ∂ℓ/∂q (spec); reverse_kl's closed form too."""
    z, u, t = _logits(5, 8, seed=2), _logits(5, 8, seed=3), 0.8
    loss, grad = _loss_and_grad(z, u, div, temperature=t, reduction="none")
    logq, logp = torch.log_softmax(z / t, -1), torch.log_softmax(u / t, -1)
    q = logq.exp()
    h = logq - logp + 1.0 if div == "reverse_kl" else 0.5 * torch.sign(q - logp.exp())
    expected = q * (h - (q * h).sum(-1, keepdim=True)) / t
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-13)
    if div == "reverse_kl":
        closed = q * (logq - logp - loss[:, None]) / t
        torch.testing.assert_close(grad, closed, rtol=1e-10, atol=1e-13)


def test_soft_cross_entropy_is_forward_kl_plus_teacher_entropy() -> None:
    z, u = _logits(6, 10, seed=4), _logits(6, 10, seed=5)
    sce = oracle_kd_loss(z, u, "soft_cross_entropy", temperature=2.0, reduction="none")
    fkl = oracle_kd_loss(z, u, "forward_kl", temperature=2.0, reduction="none")
    torch.testing.assert_close(sce, fkl + _entropy(u, 2.0), rtol=1e-12, atol=1e-12)


def test_temperature_equals_prescaled_logits() -> None:
    z, u = _logits(4, 6, seed=6), _logits(4, 6, seed=7)
    for div in DIVERGENCES:
        a = oracle_kd_loss(z, u, div, temperature=3.0)
        b = oracle_kd_loss(z / 3.0, u / 3.0, div)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_jsd_endpoints_are_exact_kls_and_the_jump_is_intended() -> None:
    z, u = _logits(4, 7, seed=8), _logits(4, 7, seed=9)
    for beta, other in [(0.0, "forward_kl"), (1.0, "reverse_kl")]:
        jsd = oracle_kd_loss(z, u, "jsd", param=beta, reduction="none")
        assert torch.equal(jsd, oracle_kd_loss(z, u, other, reduction="none"))
    for beta in (1e-9, 1 - 1e-9):  # general formula tends to 0 at both ends
        assert oracle_kd_loss(z, u, "jsd", param=beta) < 1e-7


@pytest.mark.parametrize("beta", [0.5, 0.3])
def test_jsd_swap_symmetry(beta: float) -> None:
    z, u = _logits(5, 6, seed=10), _logits(5, 6, seed=11)
    a = oracle_kd_loss(z, u, "jsd", param=beta, reduction="none")
    b = oracle_kd_loss(u, z, "jsd", param=1.0 - beta, reduction="none")
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_jsd_and_tvd_bounds_with_disjoint_supports() -> None:
    z, u = _logits(8, 5, seed=12, scale=20.0), _logits(8, 5, seed=13, scale=20.0)
    assert (oracle_kd_loss(z, u, "jsd", reduction="none") <= math.log(2) + 1e-12).all()
    tvd = oracle_kd_loss(z, u, "tvd", reduction="none")
    assert ((tvd >= 0) & (tvd <= 1 + 1e-12)).all()
    student = torch.tensor([[float("-inf"), 0.0, 0.0]], dtype=F64)
    teacher = torch.tensor([[0.0, float("-inf"), float("-inf")]], dtype=F64)
    torch.testing.assert_close(oracle_kd_loss(student, teacher, "jsd").item(), math.log(2))
    assert oracle_kd_loss(student, teacher, "tvd").item() == pytest.approx(1.0, abs=1e-15)
    assert oracle_kd_loss(student, teacher, "forward_kl").item() == INF  # genuinely infinite


def test_skew_endpoints() -> None:
    z, u = _logits(4, 9, seed=14), _logits(4, 9, seed=15)
    kw = {"reduction": "none", "temperature": 1.5}
    fkl, rkl = oracle_kd_loss(z, u, "forward_kl", **kw), oracle_kd_loss(z, u, "reverse_kl", **kw)
    torch.testing.assert_close(oracle_kd_loss(z, u, "skew_kl", param=0.0, **kw), fkl, rtol=1e-12, atol=0)
    torch.testing.assert_close(
        oracle_kd_loss(z, u, "skew_reverse_kl", param=0.0, **kw), rkl, rtol=1e-12, atol=0
    )
    for div in ("skew_kl", "skew_reverse_kl"):
        assert oracle_kd_loss(z, u, div, param=1.0, **kw).abs().max() < 1e-14


def _kl_list(a: list[float], b: list[float]) -> float:
    return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True) if x > 0)


AKL_HAND_CASES = [
    # p = [.4, .3, .2, .1] (cumulative .4, .7, .9, 1), q = [.1, .1, .4, .4]: |p - q| = [.3, .2, .2, .3].
    ([0.4, 0.3, 0.2, 0.1], [0.1, 0.1, 0.4, 0.4], 0.5, 0.3),  # head {0}: g_H = .3, g_T = .7
    ([0.4, 0.3, 0.2, 0.1], [0.1, 0.1, 0.4, 0.4], 0.75, 0.5),  # head {0, 1}: .5 / .5
    ([0.4, 0.3, 0.2, 0.1], [0.1, 0.1, 0.4, 0.4], 0.1, 0.3),  # nothing under mu: top-1 only
    ([0.4, 0.3, 0.2, 0.1], [0.1, 0.1, 0.4, 0.4], 1.0, 1.0),  # everything in the head
    ([0.4, 0.3, 0.2, 0.1], [0.1, 0.1, 0.4, 0.4], 2.0, 1.0),
    # Boundary is inclusive: p = [.5, .25, .25] (exact), cumulative .75 <= .75 -> head {0, 1}.
    ([0.5, 0.25, 0.25], [0.2, 0.2, 0.6], 0.75, 0.5),  # g_H = .3 + .05, g_T = .35
    # Ties: p = [.2, .3, .3, .2], stable descending order 1, 2, 0, 3 -> head {1} at mu = .35.
    # Had the tie gone to index 2 the head weight would be 0 (first) and .5 (second).
    ([0.2, 0.3, 0.3, 0.2], [0.15, 0.2, 0.3, 0.35], 0.35, 1 / 3),  # |p - q| = [.05, .1, 0, .15]
    ([0.2, 0.3, 0.3, 0.2], [0.1, 0.3, 0.4, 0.2], 0.35, 0.0),  # |p - q| = [.1, 0, .1, 0]
]


@pytest.mark.parametrize(("p", "q", "mu", "w_head"), AKL_HAND_CASES)
def test_akl_hand_computed(p: list[float], q: list[float], mu: float, w_head: float) -> None:
    teacher = torch.tensor(p, dtype=F64).log()[None]
    student = torch.tensor(q, dtype=F64).log()[None]
    expected = w_head * _kl_list(p, q) + (1 - w_head) * _kl_list(q, p)
    got = oracle_kd_loss(student, teacher, "akl", param=mu).item()
    assert got == pytest.approx(expected, rel=1e-12)
    if w_head == 1.0:
        assert got == pytest.approx(oracle_kd_loss(student, teacher, "forward_kl").item(), rel=1e-12)


def test_akl_weights_carry_no_gradient() -> None:
    z, u = _logits(3, 6, seed=16), _logits(3, 6, seed=17)
    loss, grad = _loss_and_grad(z, u, "akl", reduction="none")
    fkl, g_f = _loss_and_grad(z, u, "forward_kl", reduction="none")
    rkl, g_r = _loss_and_grad(z, u, "reverse_kl", reduction="none")
    # Solve loss = w_H fkl + w_T rkl with w_H + w_T = 1 per row, then compare the gradient.
    w_head = (loss - rkl) / (fkl - rkl)
    expected = w_head[:, None] * g_f + (1 - w_head[:, None]) * g_r
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("div", "param"), CASES, ids=IDS)
def test_padded_neg_inf_columns_are_inert(div: str, param: float | None) -> None:
    z, u = _logits(2, 3, 6, seed=18), _logits(2, 3, 6, seed=19)
    pad = torch.full((2, 3, 3), float("-inf"), dtype=F64)
    zp, up = torch.cat([z, pad], -1), torch.cat([u, pad], -1)
    kw = {"param": param, "temperature": 1.4, "reduction": "none"}
    loss_p, grad_p = _loss_and_grad(zp, up, div, **kw)
    loss, grad = _loss_and_grad(z, u, div, **kw)
    assert torch.isfinite(loss_p).all() and not grad_p.isnan().any()
    assert torch.equal(grad_p[..., 6:], torch.zeros(2, 3, 3, dtype=F64))
    torch.testing.assert_close(loss_p, loss, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad_p[..., :6], grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize(("div", "param"), [c for c in CASES if c[0] not in ("reverse_kl", "akl")])
def test_teacher_only_neg_inf_is_finite(div: str, param: float | None) -> None:
    z, u = _logits(4, 7, seed=20), _logits(4, 7, seed=21)
    u[:, :2] = float("-inf")
    loss, grad = _loss_and_grad(z, u, div, param=param, reduction="none")
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize(("div", "param"), CASES, ids=IDS)
@pytest.mark.parametrize("which", ["labels", "mask"])
def test_all_ignored_is_zero_with_zero_gradient(div: str, param: float | None, which: str) -> None:
    z, u = _logits(2, 3, 5, seed=22), _logits(2, 3, 5, seed=23)
    z[0] = float("-inf")
    z[1, 0] = float("nan")
    kw = (
        {"labels": torch.full((2, 3), -100)} if which == "labels" else {"mask": torch.zeros(2, 3, dtype=bool)}
    )
    loss, grad = _loss_and_grad(z, u, div, param=param, hard_label_weight=0.0, **kw)
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize(("div", "param"), CASES, ids=IDS)
def test_garbage_in_invalid_tokens_does_not_poison(div: str, param: float | None) -> None:
    z, u = _logits(6, 5, seed=24), _logits(6, 5, seed=25)
    labels = torch.tensor([0, -100, 2, -100, 4, 1])
    mask = torch.tensor([True, True, True, False, True, False])
    zg, ug = z.clone(), u.clone()
    zg[1], ug[1] = float("-inf"), float("-inf")
    zg[3], zg[5] = float("nan"), float("-inf")
    loss, grad = _loss_and_grad(zg, ug, div, param=param, labels=labels, mask=mask, hard_label_weight=0.2)
    keep = torch.tensor([0, 2, 4])
    ref, ref_grad = _loss_and_grad(
        z[keep], u[keep], div, param=param, labels=labels[keep], hard_label_weight=0.2
    )
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-14)
    assert torch.equal(grad[[1, 3, 5]], torch.zeros(3, 5, dtype=F64))
    torch.testing.assert_close(grad[keep], ref_grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("div", "param"), CASES, ids=IDS)
def test_reductions_are_consistent(div: str, param: float | None) -> None:
    z, u = _logits(2, 4, 6, seed=26), _logits(2, 4, 6, seed=27)
    labels = torch.tensor([[1, -100, 3, 0], [-100, -100, 5, 2]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    kw = {"param": param, "labels": labels, "mask": mask, "temperature": 0.7}
    none = oracle_kd_loss(z, u, div, reduction="none", **kw)
    assert none.shape == (2, 4) and torch.equal(none[~((labels != -100) & mask)], torch.zeros(4, dtype=F64))
    total = oracle_kd_loss(z, u, div, reduction="sum", **kw)
    mean = oracle_kd_loss(z, u, div, reduction="mean", **kw)
    torch.testing.assert_close(mean * 4, total, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(none.sum(), total, rtol=1e-12, atol=1e-14)
    for n_items in (16, torch.tensor([16])):
        scaled = oracle_kd_loss(z, u, div, num_items_in_batch=n_items, **kw)
        torch.testing.assert_close(scaled, total / 16, rtol=1e-12, atol=1e-14)


def test_hard_label_term_matches_cross_entropy() -> None:
    z, u = _logits(3, 4, 9, seed=28), _logits(3, 4, 9, seed=29)
    labels = torch.randint(0, 9, (3, 4), generator=torch.Generator().manual_seed(0))
    labels[0, 1] = -100
    kw = {"labels": labels, "temperature": 2.5, "reduction": "none"}
    soft = oracle_kd_loss(z, u, "jsd", **kw)
    mixed = oracle_kd_loss(z, u, "jsd", hard_label_weight=0.3, **kw)
    ce = cross_entropy(z.reshape(-1, 9), labels.reshape(-1), reduction="none").reshape(3, 4)  # T = 1
    torch.testing.assert_close(mixed, 0.7 * soft + 0.3 * ce, rtol=1e-12, atol=1e-14)
    pure = oracle_kd_loss(z, u, "forward_kl", labels=labels, hard_label_weight=1.0)
    torch.testing.assert_close(pure, cross_entropy(z.reshape(-1, 9), labels.reshape(-1)), rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_dtypes_and_detached_teacher(dtype: torch.dtype) -> None:
    z = _logits(3, 8, seed=30).to(dtype).requires_grad_(True)
    u = _logits(3, 8, seed=31).to(dtype).requires_grad_(True)
    loss = oracle_kd_loss(z, u, "forward_kl")
    loss.backward()
    assert loss.dtype == F64 and z.grad is not None and z.grad.dtype == dtype and u.grad is None


def test_invalid_arguments_raise() -> None:
    z = _logits(2, 5)
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(2, 6\)"):
        oracle_kd_loss(z, _logits(2, 6), "forward_kl")
    with pytest.raises(ValueError):
        oracle_kd_loss(z, z, "nope")
    with pytest.raises(ValueError):
        oracle_kd_loss(z, z, "jsd", param=1.5)
    with pytest.raises(ValueError):
        oracle_kd_loss(z, z, "forward_kl", temperature=0.0)
