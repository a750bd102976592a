"""Boundary rules of issue 8: the finite check, masks, labels, divisors, dtype pairs, module options,
TAID and sparse non-finite rows, the TAID schedule on a NaN loss, the CPU fallback warning."""

from __future__ import annotations

import warnings

import pytest
import torch

import fastkd.backends as backends
import fastkd.losses as L
from tests.conftest import DEVICE
from tests.helpers import BACKENDS, TRITON_AND_CPU_BACKENDS, TRITON_ONLY_BACKENDS

NAN, INF = float("nan"), float("inf")


def pair(rows: int = 4, vocab: int = 33, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(2, rows // 2, vocab, generator=gen).to(DEVICE) for _ in range(2))


def test_check_finite_names_the_token_the_input_and_the_value(monkeypatch):
    z, u = pair()
    u[1, 0, 7] = NAN
    assert L.forward_kl(z, u, backend="torch").isnan()
    with pytest.raises(ValueError, match=r"teacher_logits at token \(1, 0\) holds nan at vocabulary index 7"):
        L.forward_kl(z, u, check_finite=True)
    z[0, 1, :] = -INF
    monkeypatch.setenv("FASTKD_CHECK_FINITE", "1")
    with pytest.raises(ValueError, match=r"student_logits at token \(0, 1\) is -inf everywhere"):
        L.reverse_kl(z, u)
    with pytest.raises(ValueError, match=r"student_logits at token \(0, 1\)"):
        L.taid(z, u, 0.5)
    assert L.forward_kl(z, u, check_finite=False).isnan()  # the option wins over the variable
    hot = torch.zeros(1, 8, dtype=torch.bfloat16, device=DEVICE)
    hot[0, 2] = 1e37
    with pytest.raises(ValueError, match="overflows fp32"):
        L.forward_kl(hot, hot.clone(), temperature=0.01)


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_masks_count_nonzero_as_valid_and_float_masks_are_an_error(backend):
    z, u = pair()
    attention = torch.tensor([[1, 0], [1, 1]], device=DEVICE)  # int64, as HF gives it
    got = L.forward_kl(z, u, mask=attention, backend=backend)
    want = L.forward_kl(z, u, mask=attention.bool(), backend=backend)
    assert torch.equal(got, want)
    with pytest.raises(TypeError, match="mask must be a bool or integer"):
        L.forward_kl(z, u, mask=attention.float(), backend=backend)


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_negative_labels_other_than_ignore_index_are_an_error(weight):
    z, u = pair()
    labels = torch.tensor([[3, -1], [-100, 2]], device=DEVICE)
    with pytest.raises(ValueError, match=r"labels must be >= 0 or ignore_index \(-100\); got \[-1\]"):
        L.forward_kl(z, u, labels=labels, hard_label_weight=weight)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tensor_divisor_below_one_is_an_error_like_the_int(backend):
    z, u = pair()
    for bad in (0, torch.tensor(0), torch.tensor(-3.0)):
        with pytest.raises(ValueError, match="num_items_in_batch must be >= 1"):
            L.forward_kl(z, u, num_items_in_batch=bad, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_fp64_teacher_with_an_fp32_student_is_converted_at_the_boundary(backend):
    z, u = pair()
    got = L.forward_kl(z, u.double(), backend=backend)
    torch.testing.assert_close(got, L.forward_kl(z, u, backend=backend))


def test_module_options_are_checked_at_construction():
    with pytest.raises(
        TypeError, match=r"unknown option\(s\) \['tempreature'\]; valid options are .*'temperature'"
    ):
        L.ForwardKLLoss(tempreature=2)
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        L.ForwardKLLoss(backend="gpu")
    with pytest.raises(TypeError, match="takes no parameter 'alpha'"):
        L.JSDLoss(beta=0.3, alpha=0.1)
    modules = [
        lambda **o: L.TAIDLoss(10, **o),
        lambda **o: L.SparseKLLoss(**o),
        lambda **o: L.RankingLoss(**o),
        lambda **o: L.RLKDLoss(**o),
        lambda **o: L.SinkhornLoss(**o),
        lambda **o: L.SinKDObjectiveLoss(0.5, 2.0, **o),
    ]
    for build in modules:
        with pytest.raises(TypeError, match="unknown option"):
            build(tempreature=2)
        with pytest.raises(ValueError, match="unknown backend"):
            build(backend="gpu")
    assert L.SinKDObjectiveLoss(0.5, 2.0, epsilon=0.2).options == {"epsilon": 0.2}


@pytest.mark.parametrize("backend", TRITON_AND_CPU_BACKENDS)
@pytest.mark.parametrize("t", [0.0, 0.4, 1.0])
def test_taid_non_finite_rows_give_nan_at_every_t(backend, t):
    z, u = (x.reshape(4, 33) for x in pair())
    u[1, 3] = NAN  # dropped from the target at t = 0, still NaN by the rule
    z[2, :] = -INF
    z[3, 0] = NAN  # ignored below: never leaks
    labels = torch.tensor([0, 0, 0, -100], device=DEVICE)
    student = z.clone().requires_grad_()
    rows = L.taid(student, u, t, labels=labels, reduction="none", backend=backend)
    rows.sum().backward()
    assert rows[1:3].isnan().all() and rows[0].isfinite() and rows[3] == 0
    assert student.grad[1:3].isnan().all() and student.grad[0].isfinite().all()
    assert (student.grad[3] == 0).all()


@pytest.mark.parametrize("backend", TRITON_AND_CPU_BACKENDS)
@pytest.mark.parametrize("renormalize", [True, False])
def test_sparse_student_non_finite_rows_give_nan(backend, renormalize):
    z, u = (x.reshape(4, 33) for x in pair())
    indices, logprobs = L.teacher_topk(u, 5)
    z[1, 4] = INF
    z[2, :] = -INF
    student = z.clone().requires_grad_()
    rows = L.sparse_kl(student, indices, logprobs, renormalize=renormalize, reduction="none", backend=backend)
    rows.sum().backward()
    assert rows[1:3].isnan().all() and rows[[0, 3]].isfinite().all()
    assert student.grad[1:3].isnan().all() and student.grad[[0, 3]].isfinite().all()


def test_taid_schedule_keeps_its_state_on_a_non_finite_loss():
    schedule = L.TAIDSchedule(total_steps=100)
    schedule.update(torch.tensor(2.0))
    schedule.update(torch.tensor(1.5))
    state = {k: v.clone() for k, v in schedule.state_dict().items()}
    with pytest.warns(RuntimeWarning, match="non-finite loss"):
        schedule.update(torch.tensor(NAN))
    for name in ("t", "prev_loss", "momentum"):
        assert torch.equal(schedule.state_dict()[name], state[name]), name
    t = schedule.update(torch.tensor(1.2))
    assert t.isfinite() and t > state["t"]


def test_cpu_fallback_warns_once_with_the_reinstall_command(monkeypatch):
    monkeypatch.setattr(backends, "_EXTENSION", False)
    monkeypatch.setattr(backends, "_warned_fallback", False)
    z, u = (x.cpu() for x in pair())
    with pytest.warns(RuntimeWarning, match=r"pip install --no-build-isolation -e \."):
        L.forward_kl(z, u)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        L.forward_kl(z, u)  # once per process


def test_backend_report_says_what_is_built_here():
    report = backends.backend_report()
    assert report["extension_built"] == backends.extension_available()
    assert report["triton_available"] == backends.triton_available()
    assert report["torch_threads"] == torch.get_num_threads()
    assert {"triton_interpreted", "extension_simd", "torch", "default_backend"} <= set(report)


@pytest.mark.parametrize("backend", TRITON_ONLY_BACKENDS)
@pytest.mark.parametrize("loss", ["ranking_loss", "rlkd"])
def test_ranking_non_finite_rows_give_nan(backend, loss):
    z, u = (x.reshape(4, 33) for x in pair())
    u[1, 3] = -NAN  # a NaN with its sign bit set, as x86 arithmetic makes them
    z[2, :] = -INF
    z[3, 0] = NAN  # ignored below: never leaks
    labels = torch.tensor([0, 0, 0, -100], device=DEVICE)
    student = z.clone().requires_grad_()
    rows = getattr(L, loss)(student, u, k=3, labels=labels, reduction="none", backend=backend)
    rows.sum().backward()
    assert rows[1:3].isnan().all() and rows[0].isfinite() and rows[3] == 0
    assert student.grad[1:3].isnan().all() and student.grad[0].isfinite().all()
    assert (student.grad[3] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_sinkhorn_nan_in_a_valid_row_is_not_a_finite_distance(backend):
    z, u = (x.reshape(4, 33) for x in pair())
    z[1, 2] = NAN
    assert L.sinkhorn_loss(z, u, backend=backend).isnan()
    labels = torch.tensor([0, -100, 1, 2], device=DEVICE)
    assert L.sinkhorn_loss(z, u, labels=labels, backend=backend).isfinite()


def test_sinkd_objective_edges():
    z, u = (x.reshape(4, 33) for x in pair())
    none = L.sinkd_objective(z[:0], u[:0], torch.zeros(0, dtype=torch.int64), alpha=0.5, temperature=2.0)
    assert none == 0
    with pytest.raises(ValueError, match=r"labels of valid tokens must lie in \[0, 33\); got \[33\]"):
        L.sinkd_objective(z, u, torch.tensor([0, 33, 1, 2]), alpha=0.5, temperature=2.0)
    z[1] = NAN
    student = z.clone().requires_grad_()
    loss = L.sinkd_objective(student, u, torch.tensor([0, -100, 1, 2]), alpha=0.5, temperature=2.0)
    loss.backward()
    assert loss.isfinite() and student.grad.isfinite().all()


@pytest.mark.parametrize("backend", TRITON_AND_CPU_BACKENDS)
@pytest.mark.parametrize("loss", ["taid", "sparse_kl"])
def test_taid_and_sparse_evaluate_without_gradient_work(backend, loss):
    z, u = (x.reshape(4, 33) for x in pair())
    indices, logprobs = L.teacher_topk(u, 5)

    def call(student: torch.Tensor, **options: object) -> torch.Tensor:
        if loss == "taid":
            return L.taid(student, u, 0.4, backend=backend, reduction="none", **options)
        return L.sparse_kl(student, indices, logprobs, renormalize=False, backend=backend, reduction="none")

    want = call(z.clone().requires_grad_()).detach()
    with torch.no_grad():
        student = z.clone().requires_grad_()
        got = call(student, **({"inplace_grad": True} if loss == "taid" else {}))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert torch.equal(student, z) and not got.requires_grad
