"""The non-tensor options of a divergence loss, validated once and carried through autograd."""

from __future__ import annotations

import math
from dataclasses import dataclass

DIVERGENCES: tuple[str, ...] = (
    "forward_kl",
    "soft_cross_entropy",
    "reverse_kl",
    "jsd",
    "skew_kl",
    "skew_reverse_kl",
    "tvd",
    "akl",
)
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")

# The family parameter each divergence takes, with its default (spec: shared/spec/losses.md).
FAMILY_PARAMETER: dict[str, tuple[str, float]] = {
    "jsd": ("beta", 0.5),
    "skew_kl": ("alpha", 0.1),
    "skew_reverse_kl": ("alpha", 0.1),
    "akl": ("mu", 0.5),
}


@dataclass(frozen=True)
class DivergenceOptions:
    """Everything but the tensors: which divergence, its parameter, temperature, reduction, CE weight.

    ``divergence`` is the *effective* kernel divergence: ``jsd`` with beta 0 or 1 is stored as
    ``forward_kl`` / ``reverse_kl`` (the spec's intended endpoint jump), and ``akl`` with mu 1 (all
    tokens head, whatever the rounding of the cumulative mass) as ``forward_kl``.
    """

    divergence: str = "forward_kl"
    param: float = 0.0
    temperature: float = 1.0
    reduction: str = "mean"
    ignore_index: int = -100
    hard_label_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"unknown divergence {self.divergence!r}; expected one of {list(DIVERGENCES)}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {self.reduction!r}; expected one of {list(REDUCTIONS)}")
        _check_real("temperature", self.temperature)
        if not self.temperature > 0.0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        _check_unit("hard_label_weight", self.hard_label_weight)
        if self.divergence in FAMILY_PARAMETER:
            _check_unit(FAMILY_PARAMETER[self.divergence][0], self.param)

    @classmethod
    def build(cls, divergence: str, param: float | None = None, **kwargs: object) -> DivergenceOptions:
        """Validate ``divergence`` and its family parameter (default from the spec) and fold jsd's ends."""
        if divergence not in DIVERGENCES:
            raise ValueError(f"unknown divergence {divergence!r}; expected one of {list(DIVERGENCES)}")
        if divergence not in FAMILY_PARAMETER:
            if param is not None:
                raise TypeError(f"divergence {divergence!r} takes no family parameter, got {param!r}")
            return cls(divergence=divergence, param=0.0, **kwargs)  # type: ignore[arg-type]
        name, default = FAMILY_PARAMETER[divergence]
        value = default if param is None else param
        _check_unit(name, value)
        if divergence == "jsd" and value in (0.0, 1.0):
            return cls(divergence="forward_kl" if value == 0.0 else "reverse_kl", **kwargs)  # type: ignore[arg-type]
        if divergence == "akl" and value == 1.0:  # every token is head: exactly forward KL
            return cls(divergence="forward_kl", **kwargs)  # type: ignore[arg-type]
        return cls(divergence=divergence, param=float(value), **kwargs)  # type: ignore[arg-type]

    @property
    def needs_labels(self) -> bool:
        return self.hard_label_weight > 0.0


def _check_real(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a Python float, got {type(value).__name__} ({value!r})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")


def _check_unit(name: str, value: object) -> None:
    _check_real(name, value)
    if not 0.0 <= value <= 1.0:  # type: ignore[operator]
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
