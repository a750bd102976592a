"""fastkd: fused, memory-efficient knowledge-distillation losses for vocabulary-scale models."""

from fastkd import losses
from fastkd.boundary.options import DIVERGENCES
from fastkd.functional.sparse import teacher_topk
from fastkd.losses import TAIDSchedule

__version__ = "0.1.0"
__all__ = ["DIVERGENCES", "TAIDSchedule", "losses", "teacher_topk"]
