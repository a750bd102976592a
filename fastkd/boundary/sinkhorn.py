"""The non-tensor options of SinKD (arXiv 2402.17110), validated once and carried through autograd."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastkd.boundary.options import _check_real

# W_ij = ‖P_s[i] − P_t[j]‖₁ of two probability vectors never exceeds 2: the a-priori bound behind the
# automatic log-domain rule (no host synchronisation to look at W itself).
MAX_COST = 2.0
# fp32's smallest normal number is 2^−126 = e^−87.3; keep 7 of margin for the normalisation sums.
LOG_DOMAIN_LIMIT = 80.0


@dataclass(frozen=True)
class SinkhornOptions:
    """τ (softmax temperature), ε (entropic regulariser), n_iters, scale and the log-domain choice."""

    tau: float = 2.0
    epsilon: float = 0.1
    n_iters: int = 20
    scale: float = 1e-3
    log_domain: bool | str = "auto"

    def __post_init__(self) -> None:
        for name in ("tau", "epsilon", "scale"):
            _check_real(name, getattr(self, name))
        if not self.tau > 0.0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if not self.epsilon > 0.0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}")
        if not self.scale >= 0.0:
            raise ValueError(f"scale must be >= 0, got {self.scale}")
        if isinstance(self.n_iters, bool) or not isinstance(self.n_iters, int):
            raise TypeError(f"n_iters must be an int, got {type(self.n_iters).__name__} ({self.n_iters!r})")
        if self.n_iters < 1:
            raise ValueError(f"n_iters must be >= 1, got {self.n_iters}")
        if self.log_domain not in ("auto", True, False):
            raise ValueError(f"log_domain must be 'auto', True or False, got {self.log_domain!r}")

    def use_log_domain(self, rows: int) -> bool:
        """Whether to iterate in the log domain for a support of ``rows`` points.

        ``"auto"`` keeps the plain iteration exactly when it cannot underflow in fp32: its kernel entries
        are at least exp(−max W/ε) ≥ exp(−2/ε), and a normalisation divides entries ≤ 1 by sums of at
        most ``rows`` of them, so iterates stay above about exp(−2/ε)/rows. Plain iff
        2/ε + ln(rows) ≤ 80 (ε ≳ 0.025 for small batches; ε = 0.1 gives 20 + ln B); log domain otherwise.
        """
        if self.log_domain != "auto":
            return bool(self.log_domain)
        return MAX_COST / self.epsilon + math.log(max(rows, 1)) > LOG_DOMAIN_LIMIT
