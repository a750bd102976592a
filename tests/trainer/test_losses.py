"""The trainer's loss registry, and the core library staying free of the trainer's dependencies."""

import subprocess
import sys

import pytest
import torch

import fastkd
from fastkd.trainer.losses import (
    _REGISTRY,
    LogitMSE,
    available_losses,
    build_loss,
    loss_entry,
    masked_mean,
    register_loss,
)


def test_every_core_divergence_and_method_is_registered() -> None:
    names = set(available_losses())
    methods = {"mse", "taid", "sparse_kl", "rlkd", "sinkhorn", "prob_mse", "pkd"}
    assert set(fastkd.DIVERGENCES) | methods == names
    assert loss_entry("forward_kl").teacher == "logits"
    assert loss_entry("sparse_kl").teacher == "topk"
    assert loss_entry("pkd").teacher == "hidden"


def test_registered_divergence_matches_kd_loss() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(6, 11), torch.randn(6, 11)
    mask = torch.tensor([True, False, True, True, False, True])
    loss = build_loss("jsd", beta=0.3)(
        s, t, mask=mask, temperature=2.0, num_items_in_batch=9, backend="torch"
    )
    expected = fastkd.losses.kd_loss(s, t, "jsd", beta=0.3, mask=mask, temperature=2.0, num_items_in_batch=9)
    torch.testing.assert_close(loss, expected)


def test_logit_mse_and_masked_mean() -> None:
    s, t = torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([[0.0], [2.0], [1.0]])
    assert LogitMSE()(s, t, mask=None, num_items_in_batch=None).item() == pytest.approx((1 + 0 + 9) / 3)
    mask = torch.tensor([True, False, True])
    assert LogitMSE()(s, t, mask=mask, num_items_in_batch=torch.tensor(5)).item() == pytest.approx(10 / 5)
    assert masked_mean(torch.ones(3), torch.zeros(3, dtype=torch.bool), None).item() == 0.0


def test_registry_errors_and_extension() -> None:
    with pytest.raises(ValueError, match="unknown loss 'nope'; available"):
        build_loss("nope")
    with pytest.raises(TypeError, match="bad options"):
        build_loss("tvd", mu=0.5)
    with pytest.raises(ValueError, match="'logits', 'topk' or 'hidden', got 'cached'"):
        register_loss("x", LogitMSE, teacher="cached")
    register_loss("test_mse_alias", LogitMSE)
    assert "test_mse_alias" in available_losses()
    _REGISTRY.pop("test_mse_alias")


def test_import_fastkd_does_not_import_transformers() -> None:
    code = "import sys, fastkd, fastkd.losses; assert not {'transformers', 'datasets'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
