"""The logit scale and softcap of a model config, read as TRL 1.16's DistillationTrainer reads them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from fastkd.integrations.trl.heads import HeadTransform, head_logits, head_transform


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, HeadTransform(1.0, None)),
        ({"logit_scale": 0.0625}, HeadTransform(0.0625, None)),  # Cohere
        ({"logit_scale": None, "output_multiplier": 2.0}, HeadTransform(2.0, None)),
        ({"lm_head_multiplier": 3.0}, HeadTransform(3.0, None)),  # Falcon-H1
        ({"logits_scaling": 8.0, "model_type": "granite"}, HeadTransform(0.125, None)),
        ({"logits_scaling": 8.0, "model_type": "hyperclovax"}, HeadTransform(8.0, None)),
        ({"logit_scale": 2.0, "logits_scaling": 8.0}, HeadTransform(2.0, None)),  # the first one set wins
        ({"final_logit_softcapping": 30.0}, HeadTransform(1.0, 30.0)),  # Gemma-2/3
    ],
)
def test_head_transform(fields: dict, expected: HeadTransform) -> None:
    assert head_transform(SimpleNamespace(**fields)) == expected


def test_text_config_of_a_vlm_is_read() -> None:
    text = SimpleNamespace(final_logit_softcapping=5.0, logit_scale=0.5)
    vlm = SimpleNamespace(get_text_config=lambda: text, logit_scale=9.0)
    assert head_transform(vlm) == HeadTransform(0.5, 5.0)


def test_head_logits_scale_then_cap() -> None:
    g = torch.Generator().manual_seed(0)
    h, w, b = torch.randn(3, 4, generator=g), torch.randn(5, 4, generator=g), torch.randn(5, generator=g)
    expected = 2.0 * torch.tanh(3.0 * (h @ w.T + b) / 2.0)
    torch.testing.assert_close(head_logits(h, w, b, HeadTransform(3.0, 2.0)), expected)
