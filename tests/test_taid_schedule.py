"""TAID's adaptive t: the update rule against a plain-Python transcription, the loss module, resuming."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import fastkd
import fastkd.losses as L
from tests.conftest import DEVICE
from tests.helpers import TRITON_ONLY_BACKENDS
from tests.oracle_taid import TAIDScheduleOracle, oracle_taid


def make_run(
    backend: str, seed: int = 0, **schedule: float
) -> tuple[nn.Module, torch.optim.Optimizer, nn.Module]:
    torch.manual_seed(seed)
    model = nn.Linear(16, 97).to(DEVICE)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    criterion = L.TAIDLoss(total_steps=schedule.pop("total_steps", 40), backend=backend, **schedule)
    return model, optimizer, criterion


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(2, 5, 16, generator=gen).to(DEVICE)
    return x, (3.0 * torch.randn(2, 5, 97, generator=gen)).to(DEVICE)


def train(model, optimizer, criterion, steps: range) -> list[tuple[float, float]]:
    """(loss, t after the call) per step; the loss was computed with the t of the step before."""
    record = []
    for step in steps:
        x, teacher = batch(step)
        loss = criterion(model(x), teacher)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        record.append((loss.item(), criterion.t.item()))
    return record


@pytest.mark.parametrize("backend", TRITON_ONLY_BACKENDS)
def test_update_rule_matches_the_spec_step_by_step_on_a_recorded_run(backend):
    model, optimizer, criterion = make_run(backend, total_steps=30, t_start=0.1, alpha=0.1, t_end=0.9)
    record = train(model, optimizer, criterion, range(36))
    oracle = TAIDScheduleOracle(total_steps=30, t_start=0.1, alpha=0.1, t_end=0.9)
    t_before = 0.1
    for step, (loss, t_after) in enumerate(record):
        expected_t = oracle.update(loss)
        assert t_after == pytest.approx(expected_t, abs=1e-12), (step, oracle.branches[-1])
        assert criterion.schedule.step.item() == len(record)
        t_before = t_after
    assert t_before == 0.9
    assert {"first", "linear", "adaptive", "t_end"} <= set(oracle.branches), oracle.branches


def test_update_rule_on_a_synthetic_loss_sequence_with_rises_and_falls():
    losses = [5.0, 4.0, 4.2, 3.1, 3.1, 2.0, 6.0, 1.0, 0.5, 0.5, 0.4, 0.3] * 3
    schedule = fastkd.TAIDSchedule(total_steps=50, t_start=0.1, t_end=0.6, alpha=0.2, beta=0.7)
    oracle = TAIDScheduleOracle(total_steps=50, t_start=0.1, t_end=0.6, alpha=0.2, beta=0.7)
    for loss in losses:
        t = schedule.update(torch.tensor(loss, dtype=torch.float64))
        assert t.item() == pytest.approx(oracle.update(loss), abs=1e-12)
        assert schedule.momentum.item() == pytest.approx(oracle.m, abs=1e-12)
        assert schedule.prev_loss.item() == oracle.prev_J
    assert {"adaptive", "t_end"} <= set(oracle.branches)


def test_first_call_records_the_loss_and_leaves_t_unchanged():
    schedule = fastkd.TAIDSchedule(total_steps=10)
    schedule.update(torch.tensor(3.5))
    assert schedule.t.item() == 0.4 and schedule.momentum.item() == 0.0
    assert schedule.prev_loss.item() == 3.5 and schedule.step.item() == 1 and schedule.started.item()
    schedule.update(torch.tensor(3.0))
    assert schedule.t.item() > 0.4 and schedule.prev_loss.item() == 3.0


@pytest.mark.parametrize("backend", TRITON_ONLY_BACKENDS)
def test_resumed_run_continues_the_same_trajectory_bit_for_bit(backend):
    uninterrupted = train(*make_run(backend), range(12))
    model, optimizer, criterion = make_run(backend)
    first_part = train(model, optimizer, criterion, range(5))
    buffer = io.BytesIO()
    torch.save(
        {"model": model.state_dict(), "optim": optimizer.state_dict(), "loss": criterion.state_dict()}, buffer
    )
    buffer.seek(0)
    saved = torch.load(buffer)
    model, optimizer, criterion = make_run(backend, seed=123)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optim"])
    criterion.load_state_dict(saved["loss"])
    assert first_part + train(model, optimizer, criterion, range(5, 12)) == uninterrupted
    fresh = train(*make_run(backend, seed=0), range(5, 12))  # without the schedule's state: a different t
    assert [t for _, t in fresh] != [t for _, t in uninterrupted[5:]]


def test_state_dict_holds_the_schedule():
    criterion = L.TAIDLoss(total_steps=100)
    keys = set(criterion.state_dict())
    assert {"schedule.t", "schedule.prev_loss", "schedule.momentum", "schedule.step"} <= keys
    assert "total_steps=100" in repr(criterion)


@pytest.mark.parametrize("backend", TRITON_ONLY_BACKENDS)
def test_loss_module_uses_the_current_t_and_eval_mode_freezes_it(backend):
    gen = torch.Generator().manual_seed(2)
    z, u = torch.randn(3, 40, generator=gen).to(DEVICE), torch.randn(3, 40, generator=gen).to(DEVICE)
    criterion = L.TAIDLoss(total_steps=10, t_start=0.25, temperature=1.5, backend=backend)
    labels = torch.tensor([1, -100, 3], device=DEVICE)
    loss = criterion(z, u, labels=labels)
    exact = oracle_taid(z.double(), u.double(), 0.25, labels=labels, temperature=1.5)
    assert loss.item() == pytest.approx(exact.item(), rel=1e-5)
    assert torch.equal(loss, L.taid(z, u, 0.25, labels=labels, temperature=1.5, backend=backend))
    criterion.eval()
    before = {k: v.clone() for k, v in criterion.state_dict().items()}
    criterion(z, u)
    criterion(z * 0.5, u)
    assert all(torch.equal(before[k], v) for k, v in criterion.state_dict().items())


def test_loss_and_schedule_update_do_not_synchronise_with_the_host(monkeypatch):
    """No .item(), bool() or float() of a tensor anywhere in the step (they would sync a GPU). On CPU,
    bool() is allowed: the boundary's eager value checks (labels, a non-finite J) use it there only,
    and take torch._assert_async on CUDA."""
    criterion = L.TAIDLoss(total_steps=10, backend="torch")
    z = torch.randn(4, 30, device=DEVICE, requires_grad=True)
    u = torch.randn(4, 30, device=DEVICE)
    banned = ("item", "__float__", "__int__", "tolist") + (("__bool__",) if DEVICE == "cuda" else ())
    for name in banned:
        monkeypatch.setattr(torch.Tensor, name, lambda *a, _n=name, **k: pytest.fail(f"host sync via {_n}"))
    for _ in range(3):
        criterion(z, u, labels=torch.tensor([0, 1, -100, 2], device=DEVICE)).backward()
    monkeypatch.undo()
    assert criterion.schedule.step.item() == 3
