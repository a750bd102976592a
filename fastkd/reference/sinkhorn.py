"""Pure-PyTorch SinKD (arXiv 2402.17110): the ``torch`` backend and the benchmarks' baseline.

The unrolled iterations of shared/spec/losses.md ("SinKD") with autograd through every round. The cost
uses ``torch.cdist(p=1)``, whose forward and backward run over V without a [B, B, V] tensor (a test
checks the profiler's allocations); the plan's autograd keeps each round's B×B iterates.

Invalid rows are dropped without a data-dependent shape (so torch.compile traces it): the kernel is made
block-diagonal, valid×valid pairs from W, invalid×invalid pairs a constant, mixed pairs 0. The
normalisations then never mix the blocks, the valid block is exactly the smaller problem, and only its
pairs enter S.
"""

from __future__ import annotations

import torch

from fastkd.boundary.sinkhorn import SinkhornOptions


def sinkhorn_distance(
    student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor, options: SinkhornOptions
) -> torch.Tensor:
    """S = scale·Σ Π⊙W over the valid rows of flattened [B, V] logits (fp32, fp64 for fp64 inputs)."""
    compute = torch.float64 if student.dtype == torch.float64 else torch.float32
    keep = valid[:, None]
    q = torch.softmax(student.to(compute).masked_fill(~keep, 0.0) / options.tau, dim=-1)
    p = torch.softmax(teacher.detach().to(compute).masked_fill(~keep, 0.0) / options.tau, dim=-1)
    w = torch.cdist(q[None], p[None], p=1)[0]
    pair = valid[:, None] & valid[None, :]
    apart = ~(valid[:, None] | valid[None, :])
    if options.use_log_domain(student.shape[0]):
        log_k = torch.where(pair, -w / options.epsilon, torch.where(apart, 0.0, float("-inf")))
        for _ in range(options.n_iters):
            log_k = log_k - torch.logsumexp(log_k, dim=1, keepdim=True)
            log_k = log_k - torch.logsumexp(log_k, dim=0, keepdim=True)
        plan = log_k.exp()
    else:
        plan = torch.where(pair, torch.exp(-w / options.epsilon), apart.to(compute))
        for _ in range(options.n_iters):
            plan = plan / plan.sum(1, keepdim=True)
            plan = plan / plan.sum(0, keepdim=True)
    return options.scale * torch.where(pair, plan * w, 0.0).sum()
