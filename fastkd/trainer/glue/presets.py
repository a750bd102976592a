"""Per-task hyper-parameters for GLUE distillation, from the SinKD authors' public scripts.

Source: github.com/2018cx/SinKD, ``script/student/<task>.sh`` (Cui et al., "Sinkhorn Distance
Minimization for Knowledge Distillation", arXiv 2402.17110): ``--learning_rate``, ``--num_train_epochs``,
``--per_gpu_batch_size``, ``--temperature``, ``--alpha`` (weight of the KD term against the hard-label
CE) and ``--beta`` (weight of the Sinkhorn term). The repository has no STS-B or WNLI script: STS-B uses
the MRPC values (its KD term is the logit MSE, so temperature 1), WNLI the RTE values.
Teacher fine-tuning uses the standard BERT GLUE recipe (Devlin et al., arXiv 1810.04805): lr 2e-5,
batch 32, 3 epochs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Preset:
    learning_rate: float
    epochs: float
    batch_size: int
    temperature: float
    alpha: float
    sinkhorn_weight: float

    def override(self, **values: Any) -> Preset:
        """A copy with every non-None value of ``values`` replacing the preset's."""
        unknown = set(values) - set(asdict(self))
        if unknown:
            raise ValueError(f"unknown preset fields {sorted(unknown)}")
        return replace(self, **{k: v for k, v in values.items() if v is not None})


PRESETS: dict[str, Preset] = {
    "cola": Preset(5e-5, 20, 16, 1.0, 0.9, 0.8),
    "sst2": Preset(4e-5, 2, 32, 2.0, 0.9, 0.8),
    "mrpc": Preset(3e-5, 3, 16, 4.0, 1.0, 0.8),
    "stsb": Preset(3e-5, 3, 16, 1.0, 1.0, 0.8),
    "qqp": Preset(4e-5, 8, 32, 4.0, 1.0, 0.8),
    "mnli": Preset(4e-6, 10, 16, 3.0, 0.8, 0.8),
    "qnli": Preset(3.5e-6, 6, 16, 3.0, 0.8, 0.8),
    "rte": Preset(2e-5, 5, 16, 3.5, 0.9, 0.8),
    "wnli": Preset(2e-5, 5, 16, 3.5, 0.9, 0.8),
}
# SuperGLUE: the MPDistil defaults (github.com/notmyname16/MPDistil, main_superglue.py: student lr 3e-5,
# 10 epochs, batch 8, temperature 5, alpha 0.5); the Sinkhorn weight is the SinKD value used above.
_MPDISTIL = Preset(3e-5, 10, 8, 5.0, 0.5, 0.8)
PRESETS.update({t: _MPDISTIL for t in ("boolq", "cb", "copa", "wic", "wsc", "multirc")})
TEACHER_PRESET = Preset(2e-5, 3, 32, 1.0, 0.0, 0.0)
