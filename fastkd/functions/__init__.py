"""torch.autograd.Function per loss family, backend-agnostic."""

from fastkd.functions.divergence import DivergenceFunction

__all__ = ["DivergenceFunction"]
