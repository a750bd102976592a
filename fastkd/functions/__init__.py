"""torch.autograd.Function per loss family, backend-agnostic."""

from fastkd.functions.divergence import DivergenceFunction
from fastkd.functions.sparse import SparseKLFunction
from fastkd.functions.taid import TAIDFunction

__all__ = ["DivergenceFunction", "SparseKLFunction", "TAIDFunction"]
