"""Vocabulary-parallel forward KL on 2 ranks: fastkd.parallel against all-gathering the logits.

The pytest process is rank 0 of a 2-process group (NCCL on two CUDA devices, else gloo on CPU); a
forked helper process is rank 1 and runs the same calls, told which by a broadcast before each case.
Each rank holds half of the vocabulary of both logits [N, V/2]. Providers, timed on rank 0 (every
call synchronises the ranks through its collectives):

- ``fastkd-parallel``: :func:`fastkd.parallel.vocab_parallel_kd_loss` (O(N) all-reduces);
- ``allgather-local``: all-gather both slices (N·V elements per rank), ``kd_loss`` on the full
  logits on every rank, keep the local slice of the gradient.

``extra_info`` records ``comm_bytes``, the bytes rank 0 hands to collectives per call (counted by
wrapping ``torch.distributed``), next to the time. Run ``python -m pytest bench/bench_parallel.py
--benchmark-json=out.json``; ``FASTKD_BENCH_SHAPES=512x32000`` sets the shapes.
"""

from __future__ import annotations

import multiprocessing
import socket
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
from pytest_benchmark.fixture import BenchmarkFixture

import fastkd.losses as L
from bench.shapes import Shape, bytes_moved, shapes
from fastkd.parallel import vocab_parallel_kd_loss

WORLD = 2
PROVIDERS = ("fastkd-parallel", "allgather-local")
ROUNDS, WARMUP_ROUNDS = 10, 2
MULTI_GPU = torch.cuda.is_available() and torch.cuda.device_count() >= WORLD
SHAPES = shapes("cuda" if MULTI_GPU else "cpu")


def _device(rank: int) -> torch.device:
    return torch.device(f"cuda:{rank}") if MULTI_GPU else torch.device("cpu")


def _slices(shape: Shape, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's half of the student (a leaf) and teacher logits, N(0, 2²), fixed seed."""
    generator = torch.Generator().manual_seed(0)
    student = 2.0 * torch.randn(shape.n, shape.v, generator=generator)
    teacher = 2.0 * torch.randn(shape.n, shape.v, generator=generator)
    cut = slice(rank * shape.v // WORLD, (rank + 1) * shape.v // WORLD)
    device = _device(rank)
    return student[:, cut].to(device).contiguous().requires_grad_(), teacher[:, cut].to(device).contiguous()


def _allgather_local(student: torch.Tensor, teacher: torch.Tensor, rank: int) -> None:
    parts = [[torch.empty_like(x) for _ in range(WORLD)] for x in (student, teacher)]
    dist.all_gather(parts[0], student.detach())
    dist.all_gather(parts[1], teacher)
    full = torch.cat(parts[0], -1).requires_grad_()
    L.kd_loss(full, torch.cat(parts[1], -1)).backward()
    width = student.shape[-1]
    student.grad = full.grad[:, rank * width : (rank + 1) * width]


def make_step(provider: str, shape: Shape, rank: int) -> Callable[[], None]:
    """One forward+backward of ``provider`` on this rank's slices (fresh gradient each call)."""
    student, teacher = _slices(shape, rank)

    def step() -> None:
        student.grad = None
        if provider == "fastkd-parallel":
            vocab_parallel_kd_loss(student, teacher).backward()
        else:
            _allgather_local(student, teacher, rank)
        if MULTI_GPU:
            torch.cuda.synchronize(student.device)

    return step


def _counted_bytes(step: Callable[[], None]) -> int:
    """Bytes rank 0 hands to all_reduce / all_gather during one call of ``step``."""
    sent = [0]
    reduce, gather = dist.all_reduce, dist.all_gather

    def count(x: torch.Tensor) -> None:
        sent[0] += x.numel() * x.element_size()

    dist.all_reduce = lambda x, *a, **k: (count(x), reduce(x, *a, **k))[1]
    dist.all_gather = lambda out, x, *a, **k: (count(x), gather(out, x, *a, **k))[1]
    try:
        step()
    finally:
        dist.all_reduce, dist.all_gather = reduce, gather
    return sent[0]


def _init(rank: int, port: int) -> None:
    backend = "nccl" if MULTI_GPU else "gloo"
    if MULTI_GPU:
        torch.cuda.set_device(rank)
    init = f"tcp://127.0.0.1:{port}"
    dist.init_process_group(
        backend, init_method=init, rank=rank, world_size=WORLD, timeout=timedelta(minutes=5)
    )


def _command(values: list[int]) -> torch.Tensor:
    """Broadcast from rank 0: [go, shape index, provider index, calls]; go = 0 ends the helper."""
    cmd = torch.tensor(values, dtype=torch.int64, device=_device(dist.get_rank()))
    dist.broadcast(cmd, src=0)
    return cmd.cpu()


def _helper(port: int) -> None:
    """Rank 1: run the calls rank 0 announces until told to stop."""
    torch.set_num_threads(max(1, torch.get_num_threads() // WORLD))
    _init(1, port)
    while True:
        go, shape_index, provider_index, calls = _command([0, 0, 0, 0]).tolist()
        if not go:
            break
        step = make_step(PROVIDERS[provider_index], SHAPES[shape_index], 1)
        for _ in range(calls):
            step()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def group() -> Iterator[None]:
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    helper = multiprocessing.get_context("spawn" if MULTI_GPU else "fork").Process(
        target=_helper, args=(port,)
    )
    helper.start()
    _init(0, port)
    yield
    _command([0, 0, 0, 0])
    helper.join(timeout=60)
    dist.destroy_process_group()


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_parallel(benchmark: BenchmarkFixture, group: None, shape: Shape, provider: str) -> None:
    calls = 1 + WARMUP_ROUNDS + ROUNDS
    _command([1, SHAPES.index(shape), PROVIDERS.index(provider), calls])
    step = make_step(provider, shape, 0)
    comm = _counted_bytes(step)
    benchmark.group = f"parallel {shape} float32"
    benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS)
    local = Shape(shape.n, shape.v // WORLD)
    benchmark.extra_info.update(
        provider=provider,
        divergence=f"forward_kl/{WORLD} ranks",
        N=shape.n,
        V=shape.v,
        dtype="float32",
        device=f"{WORLD} × {'CUDA, nccl' if MULTI_GPU else 'CPU, gloo'}",
        world_size=WORLD,
        comm_bytes=comm,
        comm_bytes_per_row=comm / shape.n,
        bytes_moved=bytes_moved(local.n, local.v, "float32"),
    )
