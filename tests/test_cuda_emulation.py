"""The CUDA cluster kernels run on the CPU: csrc/cuda/ compiled by g++ over a CPU version of its one
file of CUDA primitives (tests/cuda_emulation/cluster_common.cuh: a thread per CTA, a fiber per CUDA
thread, the cluster exchange in rank order), so the kernels' own code (statistics, exchanges, AKL's
searches, the conventions, padding, the plain-load path) is checked against the fp64 oracle on every
machine, at every cluster size. What it cannot check (bulk copies, the hardware's barriers and memory
model, speed) is for compute-sanitizer and the benchmark on a GPU (bench/gpu_check_cuda.sh)."""

from __future__ import annotations

import ctypes
import shutil

import pytest
import torch

from fastkd.boundary.options import DIVERGENCES
from fastkd.ops.cuda_plan import plan_for
from fastkd.ops.divergence import mixture_log_weights
from tests import cuda_build
from tests.helpers import TEST_PARAM, assert_close_to_oracle, family_kwargs, run_fastkd, run_oracle

pytestmark = pytest.mark.skipif(
    cuda_build.cuda_include() is None or shutil.which("g++") is None,
    reason="needs g++ and the CUDA headers (nvcc)",
)
DTYPE_CODE = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


class RowParams(ctypes.Structure):
    _fields_ = [("param", ctypes.c_float), ("lw1", ctypes.c_float), ("lw2", ctypes.c_float)]


class Args(ctypes.Structure):  # csrc/cuda/divergence_args.h
    _fields_ = [
        (name, ctypes.c_void_p) for name in ("student", "teacher", "grad", "loss", "valid", "labels", "scale")
    ]
    _fields_ += [(name, ctypes.c_int64) for name in ("s_stride", "t_stride", "g_stride", "vocab", "slice")]
    _fields_ += [
        ("inv_t", ctypes.c_float),
        ("hard_w", ctypes.c_float),
        ("rp", RowParams),
        ("hard", ctypes.c_int),
    ]


@pytest.fixture(scope="module")
def launch() -> ctypes.CDLL:
    return ctypes.CDLL(str(cuda_build.build_emulation())).emu_launch


def emulate(
    launch,
    student,
    teacher,
    labels,
    divergence,
    param=None,
    temperature=1.0,
    hard=0.0,
    target=1 << 20,
    reverse=0,
):
    """Per-row loss and gradient (scale 1) of the emulated kernel, over a poisoned gradient buffer, and
    the cluster size; ``reverse`` runs the threads of a CTA in the other order between barriers."""
    plan = plan_for(student.shape[-1], student.element_size(), target)
    grad = torch.full_like(student, 7.0)
    loss = torch.full(student.shape[:1], -5.0)
    valid, scale = labels != -100, torch.tensor(1.0)
    value = 0.0 if param is None else param
    rp = RowParams(value, *mixture_log_weights(divergence, value))
    pointers = [t.data_ptr() for t in (student, teacher, grad, loss, valid, labels, scale)]
    strides = [student.stride(0), teacher.stride(0), grad.stride(0), student.shape[-1], plan.slice]
    args = Args(*pointers, *strides, 1.0 / temperature, hard, rp, int(hard > 0))
    launch(
        ctypes.byref(args),
        DIVERGENCES.index(divergence),
        DTYPE_CODE[student.dtype],
        student.shape[0],
        plan.cluster,
        plan.smem_bytes,
        reverse,
    )
    return loss, grad, plan.cluster


def check(launch, z, u, labels, divergence, target=1 << 20, **options):
    """The emulated kernel within the tolerance rule of the oracle tests (reduction "none")."""
    param = options.get(
        {"jsd": "beta", "skew_kl": "alpha", "skew_reverse_kl": "alpha", "akl": "mu"}.get(divergence, "")
    )
    t, hard = options.get("temperature", 1.0), options.get("hard_label_weight", 0.0)
    result = emulate(launch, z, u, labels, divergence, param, t, hard, target)
    options = dict(labels=labels, reduction="none", **options)
    run = lambda backend: result[:2] if backend == "emu" else run_fastkd(z, u, divergence, backend, **options)
    assert_close_to_oracle(run, run_oracle(z, u, divergence, **dict(options)), z, u, "emu", 1.0, options)
    return result


def logits(n, v, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return (3.0 * torch.randn(n, v, generator=gen)).to(dtype)


# bf16 at V = 3001 with shared memory targets that give clusters of 1, 2, 4 and 8 CTAs
CLUSTERS = {1: 1 << 20, 2: 8192, 4: 4096, 8: 2048}


@pytest.mark.parametrize("cluster", sorted(CLUSTERS))
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_every_cluster_size_matches_the_oracle(launch, divergence, cluster):
    z, u = logits(4, 3001, 1, torch.bfloat16), logits(4, 3001, 2, torch.bfloat16)
    labels = torch.tensor([0, -100, 3000, 1234])
    options = dict(temperature=1.3, hard_label_weight=0.2, **family_kwargs(divergence))
    *_, used = check(launch, z, u, labels, divergence, CLUSTERS[cluster], **options)
    assert used == cluster


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_fp32_and_fp16_rows(launch, divergence, dtype):
    z, u = logits(3, 1271, 3, dtype), logits(3, 1271, 4, dtype)
    check(
        launch,
        z,
        u,
        torch.tensor([5, 6, -100]),
        divergence,
        4096,
        temperature=0.7,
        **family_kwargs(divergence),
    )


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_unaligned_rows_take_plain_loads(launch, divergence):
    """Rows that start off 16-byte boundaries (the emulated bulk copy aborts on those) and padded -inf."""
    z_wide, u_wide = logits(3, 1300, 5, torch.bfloat16), logits(3, 1300, 6, torch.bfloat16)
    z, u = z_wide[:, 3:1274], u_wide[:, 1:1272]
    z[:, -37:] = u[:, -37:] = float("-inf")
    check(launch, z, u, torch.tensor([1, 2, 3]), divergence, 2048, **family_kwargs(divergence))


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_non_finite_rows_are_nan_and_isolated(launch, divergence):
    z, u = logits(5, 2000, 7), logits(5, 2000, 8)
    u[1, 7] = float("nan")
    z[2, 9] = float("inf")
    u[3] = float("-inf")
    z[4, 11] = float("nan")
    labels = torch.tensor([0, 1, 2, 3, -100])  # row 4 is ignored: its NaN must not show
    loss, grad, _ = emulate(launch, z, u, labels, divergence, TEST_PARAM.get(divergence), target=4096)
    assert torch.isnan(loss[1:4]).all() and torch.isnan(grad[1:4]).all()
    assert loss[4] == 0 and torch.count_nonzero(grad[4]) == 0
    clean, clean_grad, _ = emulate(
        launch, z[:1], u[:1], labels[:1], divergence, TEST_PARAM.get(divergence), target=4096
    )
    assert torch.equal(loss[0], clean[0]) and torch.equal(grad[0], clean_grad[0])


@pytest.mark.parametrize("divergence, param", [("reverse_kl", None), ("skew_reverse_kl", 0.0), ("akl", 0.5)])
def test_teacher_neg_inf_under_student_mass_is_inf_with_zero_gradient(launch, divergence, param):
    z, u = logits(3, 2000, 9), logits(3, 2000, 10)
    u[1, 100:140] = float("-inf")
    loss, grad, _ = emulate(launch, z, u, torch.tensor([0, 0, 0]), divergence, param, target=4096)
    assert torch.isposinf(loss[1]) and torch.count_nonzero(grad[1]) == 0
    assert torch.isfinite(loss[[0, 2]]).all() and torch.isfinite(grad[[0, 2]]).all()


@pytest.mark.parametrize("divergence", ["forward_kl", "jsd", "skew_kl", "skew_reverse_kl", "tvd"])
def test_teacher_neg_inf_where_the_divergence_is_finite(launch, divergence):
    z, u = logits(3, 2000, 11), logits(3, 2000, 12)
    u[:, 100:140] = float("-inf")
    check(launch, z, u, torch.tensor([0, 0, 0]), divergence, 2048, **family_kwargs(divergence))


@pytest.mark.parametrize("mu", [0.45, 0.75])
@pytest.mark.parametrize("target", [1 << 20, 2048])
def test_akl_ties_at_the_head_boundary_across_ctas(launch, mu, target):
    vocab = 3000
    probs = torch.full((vocab,), 1e-12, dtype=torch.float64)
    spots = torch.linspace(1, vocab - 1, 8).long()
    probs[0] = 0.2
    probs[spots[:7]] = 0.1
    probs[spots[7]] = 0.1 - 1e-12 * (vocab - 8)
    teacher = probs.log().float().expand(2, vocab).contiguous()
    check(launch, logits(2, vocab, 13), teacher, torch.tensor([0, 0]), "akl", target, mu=mu)


def test_akl_with_many_ties_and_mu_one(launch):
    z, u = logits(3, 4000, 14), logits(3, 4000, 15).round()  # thousands of ties at each level
    for mu in (0.05, 0.3, 0.9):
        check(launch, z, u, torch.tensor([0, 0, 0]), "akl", 2048, mu=mu)
    akl, akl_grad, _ = emulate(launch, z, u, torch.tensor([0, 0, 0]), "akl", 1.0, target=2048)
    fkl, fkl_grad, _ = emulate(launch, z, u, torch.tensor([0, 0, 0]), "forward_kl", target=2048)
    assert torch.equal(akl, fkl) and torch.equal(akl_grad, fkl_grad)  # μ = 1: all head, exactly forward KL


def test_tempered_overflow_is_not_a_finite_loss(launch):
    z = torch.zeros(2, 40, dtype=torch.bfloat16)
    z[0, 1] = 1e37  # 1e39 at T = 0.01 overflows fp32
    loss, grad, _ = emulate(launch, z, z.clone(), torch.tensor([0, 0]), "forward_kl", temperature=0.01)
    assert loss[0].isnan() and grad[0].isnan().all() and loss[1] == 0 and torch.count_nonzero(grad[1]) == 0


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_no_result_depends_on_the_order_of_threads_between_barriers(launch, divergence):
    """What one thread writes to shared memory and another reads is separated by a barrier."""
    z, u = logits(3, 3001, 16, torch.bfloat16), logits(3, 3001, 17, torch.bfloat16).round()
    call = lambda reverse: emulate(
        launch,
        z,
        u,
        torch.tensor([4, -100, 2999]),
        divergence,
        TEST_PARAM.get(divergence),
        1.1,
        0.3,
        2048,
        reverse,
    )
    (loss, grad, _), (loss_r, grad_r, _) = call(0), call(1)
    assert torch.equal(loss, loss_r) and torch.equal(grad, grad_r)
