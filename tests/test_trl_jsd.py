"""fastkd.integrations.trl.generalized_jsd_loss against TRL's own GKDTrainer.generalized_jsd_loss."""

from __future__ import annotations

import inspect

import pytest
import torch

from fastkd.integrations.trl.jsd import generalized_jsd_loss

trl_gkd = pytest.importorskip("trl.experimental.gkd", reason="trl is not installed (pip install -e '.[trl]')")
TRL_LOSS = trl_gkd.GKDTrainer.generalized_jsd_loss

BETAS = [0.0, 0.1, 0.5, 0.9, 1.0]
REDUCTIONS = ["batchmean", "sum", "mean", "none"]


def _inputs(seed: int = 0, shape: tuple[int, int, int] = (2, 5, 37)) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(*shape, generator=g) * 3
    teacher = torch.randn(*shape, generator=g) * 3
    labels = torch.randint(0, shape[-1], shape[:-1], generator=g)
    labels[0, :2] = -100
    labels[1, -1] = -100
    return student, teacher, labels


def _value_and_grad(fn, student, teacher, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    z = student.clone().requires_grad_()
    out = fn(z, teacher, **kwargs)
    weight = torch.linspace(0.5, 1.5, out.numel()).reshape(out.shape)  # grad_output != 1 for "none"
    (out * weight).sum().backward()
    return out.detach(), z.grad


def test_signature_is_trls() -> None:
    ours = list(inspect.signature(generalized_jsd_loss).parameters.values())
    theirs = list(inspect.signature(TRL_LOSS).parameters.values())
    assert [(p.name, p.default) for p in ours[: len(theirs)]] == [(p.name, p.default) for p in theirs]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in ours[len(theirs) :])


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("with_labels", [True, False])
def test_matches_trl(beta: float, reduction: str, temperature: float, with_labels: bool) -> None:
    student, teacher, labels = _inputs()
    kwargs = {"beta": beta, "temperature": temperature, "reduction": reduction}
    kwargs["labels"] = labels if with_labels else None
    ours, our_grad = _value_and_grad(generalized_jsd_loss, student, teacher, **kwargs)
    theirs, their_grad = _value_and_grad(TRL_LOSS, student, teacher, **kwargs)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=2e-5, atol=1e-6)
    scale = their_grad.abs().max().item()
    torch.testing.assert_close(our_grad, their_grad, rtol=0, atol=2e-6 * scale + 1e-9)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("num_items", [7, torch.tensor(11)])
def test_num_items_in_batch_matches_trl(beta: float, num_items: int | torch.Tensor) -> None:
    student, teacher, labels = _inputs(1)
    for reduction in ("batchmean", "none"):
        kwargs = {"labels": labels, "beta": beta, "reduction": reduction, "num_items_in_batch": num_items}
        ours, our_grad = _value_and_grad(generalized_jsd_loss, student, teacher, **kwargs)
        theirs, their_grad = _value_and_grad(TRL_LOSS, student, teacher, **kwargs)
        torch.testing.assert_close(ours, theirs, rtol=2e-5, atol=1e-6)
        torch.testing.assert_close(our_grad, their_grad, rtol=0, atol=2e-6 * their_grad.abs().max().item())


def test_all_masked_batchmean_is_zero_with_zero_gradient() -> None:
    student, teacher, labels = _inputs(2)
    labels.fill_(-100)
    ours, grad = _value_and_grad(generalized_jsd_loss, student, teacher, labels=labels)
    theirs = TRL_LOSS(student, teacher, labels=labels)
    assert ours.item() == theirs.item() == 0.0
    assert torch.count_nonzero(grad) == 0


def test_bfloat16_inputs_are_computed_in_float32() -> None:
    student, teacher, labels = _inputs(3)
    reference = TRL_LOSS(student.double(), teacher.double(), labels=labels)
    ours = generalized_jsd_loss(student.bfloat16(), teacher.bfloat16(), labels=labels)
    assert ours.dtype == torch.float32
    rounded = TRL_LOSS(student.bfloat16().double(), teacher.bfloat16().double(), labels=labels)
    assert abs(ours.item() - rounded.item()) <= 1e-5 * abs(rounded.item())
    assert abs(ours.item() - reference.item()) < 0.05 * reference.item()


def test_unknown_reduction_is_an_error() -> None:
    student, teacher, _ = _inputs()
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        generalized_jsd_loss(student, teacher, reduction="avg")
