"""FSDP2 on 2 gloo processes (batch 2 each): ``fastkd lm distill``, interrupted at step 2 and resumed
to step 3, ends with the student of one uninterrupted process with batch 4. The fused-linear path
(tied embeddings: the LM head is the gathered embedding matrix) runs with ``--fsdp`` (full-state
checkpoints); the logits path (TAID) with the environment of ``accelerate launch --use_fsdp
--fsdp_version 2 --fsdp_state_dict_type SHARDED_STATE_DICT`` (distributed checkpoints; the final
student is gathered by fastkd, HF saves none).

The equality needs the resume to restore everything a step reads: AdamW's moments and step count,
the learning-rate schedule, TAID's t, the data order. The reference run has none of that to restore."""

from __future__ import annotations

import shutil

import pytest
import torch
from cli_helpers import fsdp_runs, summary, torchrun
from conftest import save_tiny_llama
from safetensors.torch import load_file

from fastkd.trainer import cli
from fastkd.trainer.models import shrink_layers
from tests.trainer import fsdp_run

ACCELERATE_FSDP = {  # what `accelerate launch` sets for the flags above
    "ACCELERATE_USE_FSDP": "true",
    "FSDP_VERSION": "2",
    "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT",
    "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
}


def _initial(name: str, teacher: str, tied: str) -> dict[str, torch.Tensor]:
    """The student before training (the logits run cuts layer 0 of the teacher, as --student-layers 1)."""
    from transformers import AutoModelForCausalLM

    if name == "logits":
        return shrink_layers(AutoModelForCausalLM.from_pretrained(teacher), 1).state_dict()
    return load_file(f"{tied}/model.safetensors")


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_fsdp_run_resumes_and_equals_one_process_with_the_doubled_batch(tmp_path, tiny_llama) -> None:
    tied = save_tiny_llama(str(tmp_path / "tied"), layers=1, seed=1, tied=True)
    one, two = tmp_path / "one", tmp_path / "two"
    for argv in fsdp_runs(str(one), tiny_llama, tied, 4).values():
        assert cli.main(argv) == 0
    for name, env in (("fused", {}), ("logits", ACCELERATE_FSDP)):
        out = torchrun(2, fsdp_run.__file__, str(two), tiny_llama, tied, name, **env)
        assert out.returncode == 0, out.stderr[-3000:]
        ref, got = load_file(one / name / "model.safetensors"), load_file(two / name / "model.safetensors")
        assert ref.keys() <= got.keys()
        if name == "fused":  # FSDP's full state dict also lists the tied head: the same matrix
            assert torch.equal(got["lm_head.weight"], got["model.embed_tokens.weight"])
        initial = _initial(name, tiny_llama, tied)
        for key, value in ref.items():
            update = value - initial[key]
            assert update.abs().max() > 0, (name, key)  # it trains
            err = (got[key] - value).abs().max() / update.abs().max()
            assert err < 1e-3, (name, key, float(err))
        assert summary(str(two / name))["world_size"] == 2 and summary(str(two / name))["fsdp"] is True
        assert summary(str(one / name))["fsdp"] is False
