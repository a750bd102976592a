"""Fused-linear KD against the fp64 oracle (tests/oracle_fused_linear.py): every divergence and taid,
the three teacher sources, logit transforms, biases, masks, reductions, dtypes and backends."""

from __future__ import annotations

import pytest
import torch

import fastkd.losses as L
from tests.conftest import DEVICE
from tests.fused_linear_helpers import BACKENDS, PARAMS, assert_fused_matches_oracle, make_case
from tests.helpers import DTYPES
from tests.oracle import DIVERGENCES

CASE = make_case()


def family(divergence: str) -> dict:
    return dict([PARAMS[divergence]]) if divergence in PARAMS else {}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_every_divergence(divergence: str, backend: str) -> None:
    labels = torch.randint(0, 37, (2, 5), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    labels[0, :3] = -100
    assert_fused_matches_oracle(
        CASE,
        backend,
        divergence=divergence,
        labels=labels,
        chunk_size=3,
        temperature=1.5,
        **family(divergence),
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("source", ["hidden", "logits", "topk"])
def test_teacher_sources_with_transforms(source: str, backend: str) -> None:
    if source == "topk" and backend == "cpu":
        pytest.skip("the top-k teacher has Triton kernels only (backend='cpu' is an error)")
    teacher = {} if source == "topk" else {"teacher_logit_scale": 0.8, "teacher_softcap": 3.0}
    assert_fused_matches_oracle(
        CASE, backend, source, student_logit_scale=1.3, student_softcap=2.5, chunk_size=4, **teacher
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_rest_bucket_and_taid(backend: str) -> None:
    if backend == "cpu":
        pytest.skip("taid and the top-k teacher have Triton kernels only")
    assert_fused_matches_oracle(CASE, backend, "topk", renormalize=False, temperature=2.0, chunk_size=4)
    assert_fused_matches_oracle(
        CASE, backend, "logits", divergence="taid", t=0.3, chunk_size=4, temperature=1.5, student_softcap=2.0
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_masks_reductions_hard_labels(reduction: str, backend: str) -> None:
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 37, (2, 5), generator=g).to(DEVICE)
    labels[1, 1] = -100
    mask = (torch.rand(2, 5, generator=g) > 0.3).to(DEVICE)
    grad_output = torch.rand(2, 5, generator=g).to(DEVICE) + 0.5 if reduction == "none" else 1.7
    assert_fused_matches_oracle(
        CASE,
        backend,
        "logits",
        grad_output=grad_output,
        reduction=reduction,
        labels=labels,
        mask=mask,
        hard_label_weight=0.4,
        chunk_size=2,
        student_softcap=4.0,
    )
    assert_fused_matches_oracle(CASE, backend, num_items_in_batch=17, labels=labels, use_bias=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_ignored_gives_zero_loss_and_gradients(backend: str) -> None:
    h = CASE["hidden"].clone().requires_grad_()
    w = CASE["weight"].clone().requires_grad_()
    labels = torch.full((2, 5), -100, device=DEVICE)
    loss = L.fused_linear_kd(h, w, teacher_logits=CASE["teacher_logits"], labels=labels, backend=backend)
    loss.backward()
    assert loss.item() == 0.0
    assert not h.grad.any() and not w.grad.any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_padded_vocabulary_and_one_token(backend: str) -> None:
    case = make_case(leading=(1,), vocab=1271, seed=3)
    case["bias"][-7:] = float("-inf")  # padded vocabulary rows of the student ...
    case["teacher_bias"][-7:] = float("-inf")  # ... and of the teacher
    for divergence in ("forward_kl", "reverse_kl"):
        assert_fused_matches_oracle(case, backend, divergence=divergence)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES[1:])
def test_half_precision(dtype: torch.dtype, backend: str) -> None:
    assert_fused_matches_oracle(
        CASE, backend, dtype=dtype, divergence="jsd", beta=0.4, chunk_size=4, student_softcap=3.0
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_teacher_free_cross_entropy(reduction: str, backend: str) -> None:
    """hard_label_weight=1 without a teacher: the fused-linear CE, with transforms, bias, masks,
    a chunk size that does not divide N, grad_output ≠ 1 and a padded (-inf bias) vocabulary."""
    case = make_case(seed=4)
    case["bias"][-3:] = float("-inf")
    g = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 34, (2, 5), generator=g).to(DEVICE)
    labels[0, 2:4] = -100
    grad_output = torch.rand(2, 5, generator=g).to(DEVICE) + 0.5 if reduction == "none" else 1.3
    options = dict(labels=labels, hard_label_weight=1.0, chunk_size=3, reduction=reduction)
    assert_fused_matches_oracle(
        case,
        backend,
        "none",
        grad_output=grad_output,
        student_logit_scale=1.2,
        student_softcap=3.0,
        **options,
    )
    assert_fused_matches_oracle(case, backend, "none", num_items_in_batch=11, **options)
    assert_fused_matches_oracle(case, backend, "none", dtype=torch.bfloat16, **options)


@pytest.mark.parametrize("backend", BACKENDS)
def test_teacher_free_cross_entropy_edge_rows(backend: str) -> None:
    """All tokens ignored: loss 0 and zero gradients; a NaN hidden state: NaN loss, never a number."""
    h = CASE["hidden"].clone().requires_grad_()
    w = CASE["weight"].clone().requires_grad_()
    ignored = torch.full((2, 5), -100, device=DEVICE)
    loss = L.fused_linear_kd(h, w, labels=ignored, hard_label_weight=1.0, backend=backend)
    loss.backward()
    assert loss.item() == 0.0 and not h.grad.any() and not w.grad.any()
    bad = CASE["hidden"].clone()
    bad[1, 2, 0] = float("nan")
    labels = torch.zeros(2, 5, dtype=torch.long, device=DEVICE)
    rows = L.fused_linear_kd(bad, w, labels=labels, hard_label_weight=1.0, reduction="none", backend=backend)
    assert rows[1, 2].isnan() and rows.isnan().sum() == 1
