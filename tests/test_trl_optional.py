"""Without TRL: generalized_jsd_loss still imports and runs; the trainers say how to get TRL."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
sys.modules["trl"] = None  # as if trl were not installed
import torch
from fastkd.integrations.trl import generalized_jsd_loss
print(float(generalized_jsd_loss(torch.zeros(2, 3, 5), torch.ones(2, 3, 5))))
import fastkd.integrations.trl as integration
try:
    integration.GKDTrainer
except ImportError as err:
    print(err)
"""


def test_without_trl() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    value, message = out.stdout.strip().splitlines()
    assert float(value) == 0.0
    assert "needs TRL: pip install 'fastkd[trl]'" in message
