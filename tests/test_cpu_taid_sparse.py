"""What is particular to the C++ kernels of TAID (the divergence kernel's TAID mode) and of the sparse
top-k teacher: the kernel-level options the public functions do not expose (softcaps, TAID's hard-label
term), threads, in-place gradients, registration, memory. Their oracle comparisons run in test_taid.py,
test_sparse.py and test_fused_linear.py with the other backends."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastkd
import fastkd.losses as L
from bench.memory import measure
from fastkd.boundary.parallel import GRAD, STATS
from fastkd.boundary.sparse import rest_log_mass
from fastkd.ops.divergence_cpu import divergence_cpu
from fastkd.ops.shard import sparse_kl_shard_cpu, taid_shard_cpu
from fastkd.ops.sparse import sparse_kl_cpu, sparse_kl_loss_cpu
from fastkd.ops.taid import taid_cpu, taid_loss_cpu
from tests.conftest import DEVICE
from tests.helpers import HAS_CPU_EXTENSION, ModelOutput, compiled_and_eager
from tests.oracle_sparse import oracle_sparse_kl
from tests.oracle_taid import oracle_taid
from tests.test_cpu_backend import pair, with_threads

pytestmark = pytest.mark.skipif(
    not HAS_CPU_EXTENSION or DEVICE != "cpu", reason="needs CPU tensors and the built fastkd._C"
)
NEG_INF = float("-inf")


def softcap(x: torch.Tensor, cap: float) -> torch.Tensor:
    return cap * torch.tanh(x / cap) if cap > 0 else x


def assert_rows_close(got: tuple, exact: tuple, grad_tol: float = 2e-6) -> None:
    """Per-row losses and gradients of an fp32 call against fp64: relative 1e-5 on the loss, the
    gradient within ``grad_tol`` of its largest entry."""
    (loss, grad), (exact_loss, exact_grad) = got, exact
    assert not loss.isnan().any() and not grad.isnan().any()
    torch.testing.assert_close(loss.double(), exact_loss, rtol=1e-5, atol=1e-5)
    assert (grad.double() - exact_grad).abs().max() <= grad_tol * exact_grad.abs().max() + 1e-9


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("caps, hard", [((0.0, 0.0), 0.3), ((2.5, 3.0), 0.0), ((2.5, 3.0), 0.4)])
def test_taid_mode_with_softcaps_and_hard_labels_matches_the_fp64_oracle(t, caps, hard):
    """(1 − w)·TAID + w·CE(z_c, label) on softcapped logits z_c, u_c, gradient through the cap: the
    kernel's TAID mode through the divergence op, as the fused-linear path calls it."""
    z, u = pair(5, 1271, seed=3)
    z[0, :9] = NEG_INF  # padding in the student only, where the caps leave it −inf-free
    labels = torch.tensor([20, 5, 1270, -100, 0])
    valid = labels != -100
    scale = torch.tensor(0.7)
    grad = torch.empty_like(z)
    loss = divergence_cpu(z, u, valid, labels.clamp_min(0), scale, grad, "taid", t, 1.5, hard, *caps)
    z64 = z.double().requires_grad_()
    zc, uc = softcap(z64, caps[0]), softcap(u.double(), caps[1])
    rows = (1 - hard) * oracle_taid(zc, uc, t, temperature=1.5, reduction="none")
    rows = rows + hard * F.cross_entropy(zc, labels.clamp_min(0), reduction="none")
    rows = torch.where(valid, rows, 0.0)
    (rows.sum() * scale.double()).backward()
    assert_rows_close((loss, grad), (rows.detach(), z64.grad))


@pytest.mark.parametrize("renormalize", [True, False])
def test_sparse_kernel_with_a_student_softcap_matches_the_fp64_oracle(renormalize):
    z, u = pair(6, 999, seed=4)
    indices, logprobs = fastkd.teacher_topk(u, 24)
    valid = torch.tensor([True, True, False, True, True, True])
    rest = rest_log_mass(logprobs, renormalize, 999)
    scale = torch.tensor(0.4)
    grad = torch.empty_like(z)
    loss = sparse_kl_cpu(z, indices, logprobs, rest, valid, scale, grad, renormalize, 1.7, 2.0)
    z64 = z.double().requires_grad_()
    rows = oracle_sparse_kl(
        softcap(z64, 2.0), indices, logprobs, renormalize=renormalize, temperature=1.7, reduction="none"
    )
    rows = torch.where(valid, rows, 0.0)
    (rows.sum() * 0.4).backward()
    assert_rows_close((loss, grad), (rows.detach(), z64.grad))


@pytest.mark.parametrize("t", [0.0, 1.0])
def test_taid_raw_teacher_is_checked_before_the_mix_drops_it(t):
    """+inf or −inf everywhere in the teacher (dropped from the target at t = 0), NaN or +inf in the
    student (dropped at t = 1): NaN rows on the kernel as on the reference; the other rows train."""
    z, u = pair(5, 300, seed=9)
    u[1, 7] = float("inf")
    u[2] = NEG_INF
    z[3, 0] = float("nan")
    z[4, 5] = float("inf")
    for backend in ("cpu", "torch"):
        student = z.clone().requires_grad_()
        rows = L.taid(student, u, t, reduction="none", backend=backend)
        rows.sum().backward()
        assert rows[1:].isnan().all() and rows[0].isfinite(), (backend, rows)
        assert student.grad[1:].isnan().all() and student.grad[0].isfinite().all()


def _taid_run(z: torch.Tensor, u: torch.Tensor) -> tuple:
    student = z.clone().requires_grad_()
    loss = L.taid(student, u, 0.6, labels=torch.tensor([1, 2, -100, 4, 5, 6, 7]), reduction="none")
    loss.sum().backward()
    return loss.detach(), student.grad


def _sparse_run(z: torch.Tensor, u: torch.Tensor) -> tuple:
    student = z.clone().requires_grad_()
    loss = L.sparse_kl(student, *fastkd.teacher_topk(u, 40), renormalize=False, reduction="none")
    loss.sum().backward()
    return loss.detach(), student.grad


@pytest.mark.parametrize("run", [_taid_run, _sparse_run], ids=["taid", "sparse_kl"])
def test_results_do_not_depend_on_the_thread_count_or_the_run(run):
    z, u = pair(7, 3001, dtype=torch.bfloat16)
    one = with_threads(1, lambda: run(z, u))
    two = with_threads(2, lambda: run(z, u))
    again = with_threads(2, lambda: run(z, u))
    for x, y, w in zip(one, two, again, strict=True):
        assert torch.equal(x, y) and torch.equal(y, w)


def test_taid_inplace_gradient_matches_the_buffer_and_allocates_no_row_block():
    z, u = pair(64, 4096, seed=2, dtype=torch.bfloat16)
    expected = z.clone().requires_grad_()
    L.taid(expected, u, 0.4, backend="cpu").backward()
    leaf = z.clone().requires_grad_()
    student = ModelOutput.apply(leaf)  # a model's logits: not a leaf
    buffer = student.detach()
    peak = measure(lambda: L.taid(student, u, 0.4, backend="cpu", inplace_grad=True).backward(), "cpu").peak
    assert torch.equal(leaf.grad, expected.grad) and torch.equal(buffer, expected.grad)
    scratch = 6 * 4096 * 4 * torch.get_num_threads() + 4096  # six fp32 rows a thread, and scalars
    assert scratch < z.numel() * z.element_size() and peak <= scratch, (peak, scratch)


def test_sparse_gradient_may_be_written_over_the_student():
    z, u = pair(4, 500, seed=6, dtype=torch.bfloat16)
    indices, logprobs = fastkd.teacher_topk(u, 9)
    valid = torch.tensor([True, False, True, True])
    rest = rest_log_mass(logprobs, False, 500)
    args = (indices, logprobs, rest, valid, torch.tensor(0.5))
    grad = torch.empty_like(z)
    loss = sparse_kl_cpu(z, *args, grad, False, 1.2)
    inplace = z.clone()
    torch.testing.assert_close(sparse_kl_cpu(inplace, *args, inplace, False, 1.2), loss, rtol=0, atol=0)
    assert torch.equal(inplace, grad)
    assert torch.equal(sparse_kl_loss_cpu(z, indices, logprobs, rest, valid, False, 1.2), loss)


def test_opcheck_of_the_ops():
    z, u = pair(4, 300, seed=4)
    valid = torch.tensor([True, False, True, True])
    t, scale = torch.tensor(0.35), torch.tensor(1 / 3)
    indices, logprobs = fastkd.teacher_topk(u, 7)
    rest = rest_log_mass(logprobs, False, 300)
    cases = [
        (taid_cpu, (z, u, valid, t, scale, torch.empty_like(z), 1.5, 2.0, 3.0)),
        (taid_loss_cpu, (z, u, valid, t, 1.5)),
        (sparse_kl_cpu, (z, indices, logprobs, rest, valid, scale, torch.empty_like(z), False, 1.5, 2.0)),
        (sparse_kl_loss_cpu, (z, indices, logprobs, rest, valid, True, 0.8)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("rest_bucket", [False, True])
def test_one_slice_of_the_whole_vocabulary_is_the_single_process_kernel(rest_bucket):
    """The vocabulary-parallel phases (STATS, then GRAD on the statistics as they are: one rank) give
    the full kernel's gradient, and TAID's loss rows; opcheck of both phase ops."""
    z, u = pair(4, 300, seed=5)
    u[1, :40] = NEG_INF  # TAID: teacher padding; sparse: one row without mass in most columns
    valid = torch.tensor([True, True, False, True])
    t, scale = torch.tensor(0.3), torch.tensor(0.5)
    indices, logprobs = fastkd.teacher_topk(u, 12)
    rest = rest_log_mass(logprobs, not rest_bucket, 300)
    full = torch.empty_like(z)
    rows = taid_cpu(z, u, valid, t, scale, full, 1.3)
    sparse_full = torch.empty_like(z)
    sparse_kl_cpu(z, indices, logprobs, rest, valid, scale, sparse_full, not rest_bucket, 1.3)
    for op, args, want_grad, want_rows in (
        (taid_shard_cpu, (z, u, valid, t, scale), full, rows),
        (sparse_kl_shard_cpu, (z, indices, logprobs, rest, valid, scale), sparse_full, None),
    ):
        grad, stats = torch.empty_like(z), torch.zeros(4, 4)
        tail = (rest_bucket, 1.3) if op is sparse_kl_shard_cpu else (1.3,)
        op(*args, grad, stats, *tail, STATS)
        got_rows = op(*args, grad, stats, *tail, GRAD)
        torch.testing.assert_close(grad, want_grad, rtol=1e-5, atol=1e-8)
        if want_rows is not None:
            torch.testing.assert_close(got_rows, want_rows, rtol=1e-5, atol=1e-6)
        torch.library.opcheck(op, (*args, grad, stats.clone(), *tail, GRAD))


def test_torch_compile_fullgraph_matches_eager():
    z, u = pair(6, 257, seed=6)
    labels = torch.tensor([1, -100, 3, 4, 5, -100])
    t = torch.tensor(0.45)
    indices, logprobs = fastkd.teacher_topk(u, 11)

    def step(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        taid = L.taid(student * 2.0, teacher, t, labels=labels, backend="cpu")
        return taid + L.sparse_kl(student, indices, logprobs, renormalize=False, labels=labels, backend="cpu")

    loss, compiled_grad, eager_grad = compiled_and_eager(step, z, u)
    assert torch.equal(loss, step(z, u)) and torch.equal(compiled_grad, eager_grad)


@pytest.mark.parametrize("loss", ["taid", "sparse_kl"])
def test_no_n_by_v_fp32_buffer(loss):
    """bf16 logits: beyond the bf16 gradient, less than one [N, V] fp32 buffer's bytes."""
    z, u = pair(256, 4096, dtype=torch.bfloat16)
    cache = fastkd.teacher_topk(u, 64)
    student = z.requires_grad_()
    grad_bytes = z.numel() * z.element_size()

    def step(backend: str) -> None:
        if loss == "taid":
            L.taid(student, u, 0.5, backend=backend).backward()
        else:
            L.sparse_kl(student, *cache, renormalize=False, backend=backend).backward()

    step("cpu")
    student.grad = None
    extra = measure(lambda: step("cpu"), "cpu").peak - grad_bytes
    fp32_buffer = z.numel() * 4
    assert 0 <= extra < fp32_buffer / 8, (extra, fp32_buffer)
    student.grad = None
    assert measure(lambda: step("torch"), "cpu").peak > fp32_buffer
