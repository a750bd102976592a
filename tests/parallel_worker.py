"""Worker of the vocabulary-parallel tests: one process of a gloo group on localhost.

Each worker runs every case of its world size against the single-process fastkd loss on the
concatenated logits (every rank builds the same full tensors from the case's seed), counts the
bytes its collectives move, runs the fault cases last, and writes its measurements as JSON for the
test to assert on (tests/test_parallel.py).
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

import fastkd.losses as L
import fastkd.parallel.divergence as parallel_divergence
from fastkd.backends import extension_available
from fastkd.boundary.parallel import PARALLEL_DIVERGENCES
from fastkd.parallel import vocab_parallel_fused_linear_kd, vocab_parallel_kd_loss, vocab_parallel_sparse_kl

VOCAB = 13
LEADING = (2, 3)
SIZES = {2: (5, 8), 3: (6, 3, 4)}
PAD = 4  # the -inf padding columns of the "pad" cases: all of rank 2's slice on 3 ranks
PARAMS = {
    "jsd": {"beta": 0.3},
    "skew_kl": {"alpha": 0.2},
    "skew_reverse_kl": {"alpha": 0.25},
    "taid": {"t": 0.6},
}


class ByteCounter:
    """Wraps dist.all_reduce and dist.all_gather to count calls and bytes sent by this rank."""

    def __init__(self) -> None:
        self.calls, self.bytes = 0, 0
        self._reduce, self._gather = dist.all_reduce, dist.all_gather
        dist.all_reduce, dist.all_gather = self.all_reduce, self.all_gather

    def all_reduce(self, tensor: torch.Tensor, *args: object, **kwargs: object) -> object:
        self.calls, self.bytes = self.calls + 1, self.bytes + tensor.numel() * tensor.element_size()
        return self._reduce(tensor, *args, **kwargs)

    def all_gather(self, out: list, tensor: torch.Tensor, *args: object, **kwargs: object) -> object:
        self.calls, self.bytes = self.calls + 1, self.bytes + tensor.numel() * tensor.element_size()
        return self._gather(out, tensor, *args, **kwargs)

    def reset(self) -> None:
        self.calls, self.bytes = 0, 0


def cases(world: int) -> list[dict]:
    """Every divergence and option on 2 ranks with the C++ and torch backends (Triton at two cases);
    on 3 ranks (slower on a loaded machine) every divergence with the fused CPU kernels (bf16 for two),
    and TAID."""
    backends = ["cpu", "torch"] if extension_available() else ["torch"]
    if world > 2:
        backends = backends[:1]
    out = []
    for divergence in PARALLEL_DIVERGENCES:
        for backend in backends if divergence != "akl" else ["torch"]:
            hard = 0.0 if divergence == "taid" else 0.3
            common = dict(divergence=divergence, backend=backend)
            out.append(dict(common, dtype="float32", hard=hard, temperature=1.7))
            if world == 2 or divergence in ("jsd", "taid"):
                out.append(dict(common, dtype="bfloat16", reduction="none", mask=True))
    for backend in backends:
        out.append(dict(divergence="jsd", backend=backend, dtype="float32", ignore_all=True, hard=0.5))
        # akl's distributed threshold search: teacher ties that straddle the slices, another μ
        out.append(dict(divergence="akl", backend="torch", dtype="float32", ties=True, mu=0.3, hard=0.2))
        # -inf padding in the last PAD columns of both models (on 3 ranks: rank 2's whole slice)
        out.append(dict(divergence="reverse_kl", backend=backend, dtype="float32", pad=True))
        if world > 2:
            continue
        out.append(dict(divergence="skew_kl", backend=backend, dtype="float32", spread=40.0))  # gaps > 100
        out.append(dict(divergence="forward_kl", backend=backend, dtype="float32", reduction="sum", hard=1.0))
        out.append(dict(divergence="reverse_kl", backend=backend, dtype="float32", num_items=7))
    if world == 2 and os.environ.get("FASTKD_PARALLEL_TRITON", "1") == "1":
        # The Triton interpreter is slow: one case through all three phases with the hard-label term, TAID.
        for divergence, hard in (("tvd", 0.4), ("taid", 0.0)):
            out.append(dict(divergence=divergence, backend="triton", dtype="float32", hard=hard))
    return [dict(seed=i, **case) for i, case in enumerate(out)]


def fused_cases(world: int) -> list[dict]:
    """Column-parallel LM heads with a bias: hard labels on the C++ kernels; on 2 ranks also logit
    scale and softcap, TAID (torch backend) and bf16."""
    backend = "cpu" if extension_available() else "torch"
    out = [dict(divergence="forward_kl", backend=backend, hard=0.3, temperature=1.3)]
    if world == 2:
        out.append(dict(divergence="jsd", backend="torch", scale=1.5, softcap=4.0))
        out.append(dict(divergence="taid", backend="torch"))
        out.append(dict(divergence="taid", backend=backend, softcap=3.0))
        # bf16 against the fused single-process loss (whose GEMMs round the teacher to bf16 too)
        out.append(dict(divergence="reverse_kl", backend=backend, dtype="bfloat16"))
    return [dict(dict(seed=100 + i, fused=True, dtype="float32"), **case) for i, case in enumerate(out)]


def run_fused_case(case: dict, rank: int, world: int, counter: ByteCounter) -> dict:
    """vocab_parallel_fused_linear_kd against fused_linear_kd on the full weights: loss, d hidden
    (full on every rank), d weight and d bias slices."""
    gen = torch.Generator().manual_seed(case["seed"])
    dtype = getattr(torch, case["dtype"])
    h, th = torch.randn(*LEADING, 4, generator=gen).to(dtype), torch.randn(*LEADING, 5, generator=gen)
    w, tw = torch.randn(VOCAB, 4, generator=gen).to(dtype), torch.randn(VOCAB, 5, generator=gen)
    b = torch.randn(VOCAB, generator=gen)
    options = loss_options(case, full_inputs(dict(case, dtype="float32")))
    options.update(student_logit_scale=case.get("scale", 1.0), student_softcap=case.get("softcap"))
    options["divergence"] = case["divergence"]
    cut = slice(sum(SIZES[world][:rank]), sum(SIZES[world][: rank + 1]))

    def run(parallel: bool) -> tuple:
        leaves = [
            x.clone().requires_grad_() for x in (h, w[cut] if parallel else w, b[cut] if parallel else b)
        ]
        if parallel:
            counter.reset()
            loss = vocab_parallel_fused_linear_kd(
                leaves[0], leaves[1], th, tw[cut], student_bias_shard=leaves[2], **options
            )
        else:
            loss = L.fused_linear_kd(leaves[0], leaves[1], th, tw, student_bias=leaves[2], **options)
        sent = dict(calls=counter.calls, bytes=counter.bytes)
        loss.backward(torch.tensor(1.3))
        return loss.detach(), [leaf.grad for leaf in leaves], sent

    ref_loss, ref_grads, _ = run(parallel=False)
    loss, grads, sent = run(parallel=True)
    refs = (ref_grads[0], ref_grads[1][cut], ref_grads[2][cut])
    result = errors(loss, grads[0], ref_loss, ref_grads[0])
    result["grad_err"] = max(
        errors(loss, g, ref_loss, r)["grad_err"] for g, r in zip(grads, refs, strict=True)
    )
    return dict(
        case=case, backward_calls=0, rows=6, hidden_bytes=h.numel() * h.element_size(), **sent, **result
    )


def sparse_cases(world: int) -> list[dict]:
    """Top-k teacher: renormalised, with the rest bucket (bf16, mask, per-token loss; also through
    the Triton kernel's sliced entry), and k = V; torch and the C++ kernel's phases."""
    out = [dict(k=4, renormalize=True, temperature=1.5, dtype="float32")]
    if world == 2:
        out.append(dict(k=5, renormalize=False, reduction="none", mask=True, dtype="bfloat16"))
        out.append(dict(k=VOCAB, renormalize=False, reduction="sum", dtype="float32"))
    backends = ["torch", "cpu"] if extension_available() else ["torch"]  # cpu: the C++ kernel's phases
    out = [
        dict(case, seed=200 + i, sparse=True, divergence="sparse_kl", backend=backend)
        for i, case in enumerate(out)
        for backend in backends
    ]
    if world == 2 and os.environ.get("FASTKD_PARALLEL_TRITON", "1") == "1":  # the kernel's sliced entry
        rest = next(case for case in out if case["k"] == 5)  # the rest bucket
        out.append(dict(rest, seed=210, backend="triton", dtype="float32"))
    return out


def run_sparse_case(case: dict, rank: int, world: int, counter: ByteCounter) -> dict:
    """vocab_parallel_sparse_kl against sparse_kl on the full student logits (global indices)."""
    x = full_inputs(case)
    indices, logprobs = L.teacher_topk(x["teacher"], case["k"])
    logprobs[0, 0, -1] = float("-inf")  # a padding slot
    options = loss_options(case, x)
    options.update(renormalize=case["renormalize"])
    z = x["student"].clone().requires_grad_()
    ref = L.sparse_kl(z, indices, logprobs, **options)
    ref.backward(x["grad_output"].expand_as(ref))
    cut = slice(sum(SIZES[world][:rank]), sum(SIZES[world][: rank + 1]))
    shard = x["student"][..., cut].clone().requires_grad_()
    counter.reset()
    loss = vocab_parallel_sparse_kl(shard, indices, logprobs, **options)
    sent = dict(calls=counter.calls, bytes=counter.bytes)
    loss.backward(x["grad_output"].expand_as(loss))
    sent["backward_calls"] = counter.calls - sent["calls"]
    return dict(
        case=case, rows=6, **sent, **errors(loss.detach(), shard.grad, ref.detach(), z.grad[..., cut])
    )


def full_inputs(case: dict) -> dict:
    gen = torch.Generator().manual_seed(case["seed"])
    dtype = getattr(torch, case["dtype"])
    spread = case.get("spread", 3.0)
    student = (spread * torch.randn(*LEADING, VOCAB, generator=gen)).to(dtype)
    teacher = (spread * torch.randn(*LEADING, VOCAB, generator=gen)).to(dtype)
    if case.get("ties"):  # few levels: the head's tie level holds tokens of several ranks
        teacher = (teacher / 4).round() * 4
    if case.get("pad"):
        student[..., -PAD:] = teacher[..., -PAD:] = float("-inf")
    labels = torch.tensor([0, VOCAB - 1, -100, 5, 2, 7]).reshape(LEADING)  # on every rank of both layouts
    if case.get("ignore_all"):
        labels = torch.full(LEADING, -100)
    grad_output = torch.rand(LEADING, generator=gen) if case.get("reduction") == "none" else torch.tensor(1.3)
    mask = torch.rand(LEADING, generator=gen) > 0.3 if case.get("mask") else None
    return dict(student=student, teacher=teacher, labels=labels, mask=mask, grad_output=grad_output)


def loss_options(case: dict, x: dict) -> dict:
    options = dict(PARAMS.get(case["divergence"], {}))
    if "mu" in case:
        options["mu"] = case["mu"]
    options.update(labels=x["labels"], mask=x["mask"], temperature=case.get("temperature", 1.0))
    options.update(reduction=case.get("reduction", "mean"), backend=case["backend"])
    if case.get("num_items"):
        options["num_items_in_batch"] = case["num_items"]
    if case.get("hard"):
        options["hard_label_weight"] = case["hard"]
    return options


def single_process(case: dict, x: dict, options: dict) -> tuple[torch.Tensor, torch.Tensor]:
    z = x["student"].clone().requires_grad_()
    options = dict(options)
    if case["divergence"] == "taid":
        loss = L.taid(z, x["teacher"], options.pop("t"), **options)
    else:
        loss = L.kd_loss(z, x["teacher"], case["divergence"], **options)
    loss.backward(x["grad_output"].expand_as(loss))
    return loss.detach(), z.grad


def errors(loss: torch.Tensor, grad: torch.Tensor, ref_loss: torch.Tensor, ref_grad: torch.Tensor) -> dict:
    loss_err = ((loss - ref_loss).abs().max() / ref_loss.abs().max().clamp_min(1e-30)).item()
    ref_grad = ref_grad.double()
    grad_err = ((grad.double() - ref_grad).abs().max() / ref_grad.abs().max().clamp_min(1e-30)).item()
    return dict(loss_err=loss_err, grad_err=grad_err, loss_zero=bool((ref_loss == 0).all()))


def run_case(case: dict, rank: int, world: int, counter: ByteCounter) -> dict:
    x = full_inputs(case)
    sizes = SIZES[world]
    start = sum(sizes[:rank])
    options = loss_options(case, x)
    ref_loss, ref_grad = single_process(case, x, options)
    shard = x["student"][..., start : start + sizes[rank]].clone().requires_grad_()
    teacher = x["teacher"][..., start : start + sizes[rank]]
    counter.reset()
    loss = vocab_parallel_kd_loss(shard, teacher, case["divergence"], **options)
    sent = dict(calls=counter.calls, bytes=counter.bytes)
    loss.backward(x["grad_output"].expand_as(loss))
    sent["backward_calls"] = counter.calls - sent["calls"]
    cut = slice(start, start + sizes[rank])
    result = errors(loss.detach(), shard.grad, ref_loss, ref_grad[..., cut])
    # fp64 (torch backend): how far each side is from the exact result, for the self-calibrating rule
    exact = {
        k: v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in x.items()
    }
    exact_loss, exact_grad = single_process(case, exact, dict(options, backend="torch"))
    result["parallel_grad_err64"] = errors(loss, shard.grad, exact_loss, exact_grad[..., cut])["grad_err"]
    result["single_grad_err64"] = errors(ref_loss, ref_grad, exact_loss, exact_grad)["grad_err"]
    return dict(case=case, **sent, rows=6, **result)


def nonfinite_case(rank: int, world: int, backend: str) -> dict:
    """Row 0 holds a NaN in the student's last column (the last rank's slice), row 1 a teacher −inf
    where the student has mass (reverse KL is +inf there): on every rank, as in one process, row 0
    has loss NaN and a NaN gradient, row 1 loss +inf and a zero gradient, row 2 is finite; then the
    same comparison for TAID's raw-teacher rule (the ``taid`` entry)."""
    gen = torch.Generator().manual_seed(7)
    student, teacher = torch.randn(3, VOCAB, generator=gen), torch.randn(3, VOCAB, generator=gen)
    student[0, -1] = float("nan")
    teacher[1, 0] = float("-inf")
    results = _nonfinite_runs(rank, world, student, teacher, "reverse_kl", {"backend": backend})
    # TAID at t = 0: the target is the student alone, yet a NaN teacher (row 0, on the first rank's
    # slice) or one that is −inf everywhere (row 1) still gives NaN, as in one process
    teacher = torch.randn(3, VOCAB, generator=gen)
    teacher[0, 0], teacher[1] = float("nan"), float("-inf")
    t = torch.tensor(0.0)
    taid = _nonfinite_runs(
        rank, world, student.nan_to_num(0.0), teacher, "taid", {"backend": backend, "t": t}
    )
    return dict(results, taid=taid)


def _nonfinite_runs(
    rank: int, world: int, student: torch.Tensor, teacher: torch.Tensor, divergence: str, options: dict
) -> dict:
    """Loss strings of rows 0 and 1 and the gradient rows' state, single-process and on this slice."""
    cut = slice(sum(SIZES[world][:rank]), sum(SIZES[world][: rank + 1]))
    results = {}
    for name, logits in (("single", student), ("parallel", student[:, cut])):
        z = logits.clone().requires_grad_()
        if name == "parallel":
            loss = vocab_parallel_kd_loss(z, teacher[:, cut], divergence, reduction="none", **options)
        elif divergence == "taid":
            loss = L.taid(z, teacher, options["t"], reduction="none", backend=options["backend"])
        else:
            loss = L.kd_loss(z, teacher, divergence, reduction="none", **options)
        loss.backward(torch.ones(3))
        grad = z.grad if name == "parallel" else z.grad[:, cut]
        results[name] = dict(
            loss=[str(v) for v in loss.tolist()[:2]],
            nan_grad=bool(grad[0].isnan().all()),
            zero_grad=bool((grad[1] == 0).all()),
            finite=bool(grad[2].isfinite().all()),
        )
    return results


def _message(call: object) -> str:
    try:
        call()
    except Exception as error:  # the test records whatever surfaced
        return f"{type(error).__name__}: {error}"
    return "no error"


def fault_cases(rank: int) -> dict:
    """Rank 1 gives a wrong teacher shape (checked before any collective); every rank asks for akl
    on the C++ backend (refused: its local work is PyTorch); then rank 1 raises inside the loss after
    the layout exchange. Every rank must see an error each time, not hang (the last case runs on a
    group with a 2 s timeout)."""
    student = torch.randn(4, 6, requires_grad=True)
    bad_teacher = torch.randn(4, 5 if rank == 1 else 6)
    checks = _message(lambda: vocab_parallel_kd_loss(student, bad_teacher, backend="torch"))
    akl = _message(lambda: vocab_parallel_kd_loss(student, torch.randn(4, 6), "akl", backend="cpu"))
    short = dist.new_group(backend="gloo", timeout=timedelta(seconds=2))
    if rank == 1:
        parallel_divergence._run_phase = _raising_phase
    teacher = torch.randn(4, 6)
    inside = _message(lambda: vocab_parallel_kd_loss(student, teacher, backend="torch", group=short))
    return dict(checks=checks, akl=akl, inside=inside)


def _raising_phase(*args: object) -> None:
    raise RuntimeError("injected failure inside the loss")


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    init = f"tcp://127.0.0.1:{port}"
    timeout = timedelta(seconds=60)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world, timeout=timeout)
    counter = ByteCounter()
    results = [run_case(case, rank, world, counter) for case in cases(world)]
    results += [run_fused_case(case, rank, world, counter) for case in fused_cases(world)]
    results += [run_sparse_case(case, rank, world, counter) for case in sparse_cases(world)]
    backends = ["cpu", "torch"] if extension_available() else ["torch"]
    nonfinite = {backend: nonfinite_case(rank, world, backend) for backend in backends}
    faults = fault_cases(rank)
    record = dict(results=results, faults=faults, nonfinite=nonfinite)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))
    dist.barrier()
    dist.destroy_process_group()
