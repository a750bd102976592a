"""The chunked fused-linear KD pass, registered as the custom op ``fastkd::fused_linear_fwd``.

Only valid tokens are projected: their row indices are gathered first (``nonzero``: on CUDA the one
host synchronisation of the call, which sizes the chunk loop), then, chunk by chunk of ``chunk`` rows:

1. GEMMs give the fp32 logits x = s·(h Wᵀ + b) of the student and (for a hidden-state teacher) the
   teacher (fp32 accumulation: fp32 output on CUDA, fp32 operands on CPU); a softcap turns x into
   c·tanh(x/c) in place and keeps 1 − tanh² for the chain rule;
2. the existing fused row kernel (``fastkd::divergence_fwd`` / ``divergence_cpu`` / ``taid_fwd`` /
   ``sparse_kl_fwd``) writes row_scale·s·∂ℓ/∂z over the student's chunk logits, in place (without a
   teacher, the pure hard-label CE: :func:`cross_entropy_rows`, three torch passes over the chunk);
3. d(hidden) = g @ W for the chunk, d(weight) += gᵀ @ h, d(bias) += Σ_rows g.

Memory beyond inputs and outputs: the chunk's fp32 [chunk, V] buffers (two, three with a student cap)
and, for half-precision inputs on CPU, one fp32 copy of each weight. No [N, V] tensor exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastkd.ops.divergence import divergence_fwd
from fastkd.ops.divergence_cpu import divergence_cpu
from fastkd.ops.sparse import sparse_kl_fwd
from fastkd.ops.taid import taid_fwd

HALF_DTYPES = (torch.bfloat16, torch.float16)


class Projection:
    """One model's LM head for the chunk loop: fp32 logits of selected rows, and their gradients."""

    def __init__(
        self,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        scale: float,
        cap: float,
        gemm_dtype: torch.dtype,
    ) -> None:
        # fp32 output from half operands needs CUDA's out_dtype GEMM; on CPU the operands go to fp32.
        self.half = gemm_dtype in HALF_DTYPES and hidden.is_cuda
        self.dtype = gemm_dtype if self.half else torch.float32
        self.hidden, self.gemm_dtype = hidden, gemm_dtype
        self.weight = weight.to(gemm_dtype).to(self.dtype)
        self.bias = None if bias is None else bias.to(torch.float32)
        self.scale, self.cap = scale, cap

    def logits(
        self, rows: torch.Tensor, cap_here: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(chunk hidden in the GEMM dtype, fp32 logits s·(h Wᵀ + b), softcapped here when
        ``cap_here`` (else by the row kernel's loads), the chain factor 1 − tanh² or None)."""
        h = self.hidden.index_select(0, rows).to(self.gemm_dtype).to(self.dtype)
        if self.half:
            z = torch.mm(h, self.weight.t(), out_dtype=torch.float32)
            if self.bias is not None:
                z.add_(self.bias)
            if self.scale != 1.0:
                z.mul_(self.scale)
        elif self.bias is not None:
            z = torch.addmm(self.bias, h, self.weight.t(), beta=self.scale, alpha=self.scale)
        else:
            z = torch.mm(h, self.weight.t())
            if self.scale != 1.0:
                z.mul_(self.scale)
        chain = None
        if self.cap > 0.0 and cap_here:
            z.div_(self.cap).tanh_()
            chain = torch.square(z).neg_().add_(1.0)
            z.mul_(self.cap)
        return h, z, chain

    def backward(self, rows: torch.Tensor, h: torch.Tensor, g: torch.Tensor, grads: tuple) -> None:
        """Add the chunk's ∂ℓ/∂x = ``g`` (fp32 [chunk, V]) into (grad_hidden, grad_weight, grad_bias)."""
        grad_hidden, grad_weight, grad_bias = grads
        gm = g.to(self.dtype)
        grad_hidden.index_copy_(0, rows, torch.mm(gm, self.weight).to(grad_hidden.dtype))
        if self.half and grad_weight.dtype == torch.float32:
            torch.ops.aten.addmm.dtype_out(grad_weight, gm.t(), h, torch.float32, out=grad_weight)
        else:
            grad_weight.addmm_(gm.t().to(grad_weight.dtype), h.to(grad_weight.dtype))
        if grad_bias.numel():
            grad_bias.add_(g.sum(0))


def _teacher_chunk(
    rows: torch.Tensor, teacher: Projection | None, logits: torch.Tensor | None, scale: float, cap: float
) -> torch.Tensor:
    if teacher is not None:
        return teacher.logits(rows, cap_here=cap > 0.0)[1]
    u = logits.index_select(0, rows)
    if scale == 1.0 and cap == 0.0:
        return u
    u = u.to(torch.float32).mul_(scale)
    return u.div_(cap).tanh_().mul_(cap) if cap > 0.0 else u


def cross_entropy_rows(
    z: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ℓ = logsumexp(z) − z[label] per row, fp32 [c]; scale·(softmax(z) − onehot(label)) written
    over the fp32 chunk logits ``z`` [c, V]). A row whose log-sum-exp is not finite (NaN, +inf, all
    −inf) gets loss NaN and NaN gradients. Reads z three times and writes it twice: next to the chunk's
    GEMMs (6·c·V·H FLOPs) these passes are cheap, so the teacher-free CE needs no kernel of its own."""
    lse = torch.logsumexp(z, dim=1)
    picked = z.gather(1, labels[:, None]).squeeze(1)
    loss = torch.where(lse.isfinite(), lse - picked, float("nan"))
    z.sub_(lse[:, None]).exp_()
    z.scatter_add_(1, labels[:, None], z.new_full((z.shape[0], 1), -1.0))
    return loss, z.mul_(scale)


def _row_op(
    kind: str,
    backend: str,
    z: torch.Tensor,
    u: torch.Tensor | None,
    rows: torch.Tensor,
    sparse: tuple,
    valid: torch.Tensor,
    labels: torch.Tensor | None,
    t: torch.Tensor | None,
    scale: torch.Tensor,
    options: tuple,
    caps: tuple[float, float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-row losses of the chunk, scale·∂ℓ/∂z): the kernel writes the gradient over ``z``, except
    where it reads the student after writing (the sparse kernel; the Triton divergence kernel's label
    logit): then the gradient gets its own buffer."""
    divergence, param, temperature, hard_w, renormalize = options
    if kind == "ce":
        return cross_entropy_rows(z, labels.index_select(0, rows), scale)
    if kind == "taid":
        return taid_fwd(z, u, valid, t, scale, z, temperature), z
    if kind == "sparse":
        indices, logprobs, rest = (x.index_select(0, rows) for x in sparse)
        grad = torch.empty_like(z)
        return sparse_kl_fwd(z, indices, logprobs, rest, valid, scale, grad, renormalize, temperature), grad
    op = divergence_cpu if backend == "cpu" else divergence_fwd
    chunk_labels = None if labels is None else labels.index_select(0, rows)
    # the Triton kernel reads the label's logit after writing the gradient: not in place with hard labels
    grad = torch.empty_like(z) if hard_w > 0.0 and backend != "cpu" else z
    loss = op(z, u, valid, chunk_labels, scale, grad, divergence, param, temperature, hard_w, *caps)
    return loss, grad


@dataclass
class ChunkPass:
    """What every chunk of one call shares; :meth:`chunk` runs one chunk of valid rows."""

    kind: str
    backend: str
    student: Projection
    teacher: Projection | None
    teacher_logits: torch.Tensor | None
    teacher_transform: tuple[float, float]
    sparse: tuple
    labels: torch.Tensor | None
    t: torch.Tensor | None
    row_scale: torch.Tensor
    options: tuple
    loss: torch.Tensor
    grads: tuple | None

    def chunk(self, rows: torch.Tensor) -> None:
        """Loss rows into ``loss``; with ``grads``, the chunk's gradients added into them."""
        per_row = self.row_scale.dim() == 1
        kernel_scale = (self.row_scale.new_ones(()) if per_row else self.row_scale).mul(self.student.scale)
        fold = self.kind == "divergence"  # its kernels apply both softcaps as they load
        h, z, chain = self.student.logits(rows, cap_here=not fold)
        t_scale, t_cap = self.teacher_transform
        caps = (self.student.cap, t_cap) if fold else (0.0, 0.0)
        u = None
        if self.kind not in ("sparse", "ce"):
            u = _teacher_chunk(rows, self.teacher, self.teacher_logits, t_scale, 0.0 if fold else t_cap)
        valid = torch.ones(rows.shape[0], dtype=torch.bool, device=rows.device)
        rows_loss, g = _row_op(
            self.kind,
            self.backend,
            z,
            u,
            rows,
            self.sparse,
            valid,
            self.labels,
            self.t,
            kernel_scale,
            self.options,
            caps,
        )
        self.loss.index_copy_(0, rows, rows_loss)
        if self.grads is None:
            return
        if chain is not None:
            g.mul_(chain)
        if per_row:
            g.mul_(self.row_scale.index_select(0, rows)[:, None])
        self.student.backward(rows, h, g, self.grads)


@torch.library.custom_op("fastkd::fused_linear_fwd", mutates_args=(), device_types=("cuda", "cpu"))
def fused_linear_fwd(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    teacher_hidden: torch.Tensor | None,
    teacher_weight: torch.Tensor | None,
    teacher_bias: torch.Tensor | None,
    teacher_logits: torch.Tensor | None,
    topk_indices: torch.Tensor | None,
    topk_logprobs: torch.Tensor | None,
    rest: torch.Tensor | None,
    valid: torch.Tensor,
    labels: torch.Tensor | None,
    t: torch.Tensor | None,
    row_scale: torch.Tensor,
    kind: str,
    divergence: str,
    param: float,
    temperature: float,
    hard_label_weight: float,
    renormalize: bool,
    transforms: list[float],
    chunk: int,
    backend: str,
    gemm_dtype: torch.dtype,
    grad_weight_dtype: torch.dtype,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss rows fp32 [N], grad_hidden [N, H_s], grad_weight [V, H_s], grad_bias fp32 [V] or [0]).

    The gradients are row_scale·∂ℓ_n/∂(·) (``row_scale`` fp32, [] or [N]), zero at invalid rows;
    with ``need_grad`` False they are empty [0] tensors and no backward GEMM runs.
    ``kind``: "divergence" (with divergence, param, hard_label_weight), "taid" (``t``), "sparse"
    (top-k teacher, ``rest``, the log rest mass, and ``renormalize``) or "ce" (no teacher: the
    hard-label cross-entropy alone). ``transforms`` = [s_student,
    cap_student, s_teacher, cap_teacher] (cap 0: none). ``backend``: "triton" or "cpu" (row kernels).
    """
    s_scale, s_cap, t_scale, t_cap = transforms
    loss, grads = _outputs(hidden, weight, bias, grad_weight_dtype, need_grad)
    with torch.autocast(hidden.device.type, enabled=False):  # the GEMM dtype is explicit
        student = Projection(hidden, weight, bias, s_scale, s_cap, gemm_dtype)
        teacher = None
        if teacher_hidden is not None:
            teacher = Projection(teacher_hidden, teacher_weight, teacher_bias, t_scale, t_cap, gemm_dtype)
        work = ChunkPass(
            kind,
            backend,
            student,
            teacher,
            teacher_logits,
            (t_scale, t_cap),
            (topk_indices, topk_logprobs, rest),
            labels,
            t,
            row_scale,
            (divergence, param, temperature, hard_label_weight, renormalize),
            loss,
            grads if need_grad else None,
        )
        for rows in valid.nonzero().squeeze(1).split(chunk):
            work.chunk(rows)  # the chunk's buffers are freed before the next chunk allocates its own
    return (loss, *grads)


def _outputs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    grad_weight_dtype: torch.dtype,
    need_grad: bool,
) -> tuple[torch.Tensor, tuple]:
    """Zero-initialised loss rows and gradients (empty [0] gradients without ``need_grad``)."""
    loss = hidden.new_zeros(hidden.shape[0], dtype=torch.float32)
    if not need_grad:
        return loss, tuple(
            hidden.new_zeros(0, dtype=dtype) for dtype in (hidden.dtype, grad_weight_dtype, torch.float32)
        )
    grad_hidden = torch.zeros_like(hidden)
    grad_weight = torch.zeros(weight.shape, dtype=grad_weight_dtype, device=weight.device)
    grad_bias = hidden.new_zeros(0 if bias is None else bias.shape[0], dtype=torch.float32)
    return loss, (grad_hidden, grad_weight, grad_bias)


@fused_linear_fwd.register_fake
def _fused_linear_fake(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *args: object
) -> tuple[torch.Tensor, ...]:
    grad_weight_dtype, need_grad = args[-2], args[-1]
    loss, grads = _outputs(hidden, weight, bias, grad_weight_dtype, need_grad)
    return (loss, *grads)
