"""Teacher-cache integrity: every kind of damage is a clear error naming the file, in the reader, in
``load_cache`` and in ``fastkd lm verify-cache``; nothing is silently dropped."""

import json
import os
import shutil

import pytest
import torch
from conftest import LM_DATA
from safetensors.torch import load_file, save_file

from fastkd.trainer.cli import main
from fastkd.trainer.lm.cache import cache_teacher, load_cache
from fastkd.trainer.lm.cache_check import shard_entry, verify_cache

SHARD = "shard-00001.safetensors"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, tiny_llama: str) -> str:
    directory = str(tmp_path_factory.mktemp("cache"))
    cache_teacher(tiny_llama, LM_DATA, 4, directory, shard_size=3, max_samples=7)
    return directory


def _copy(cache: str, tmp_path) -> str:
    target = str(tmp_path / "cache")
    shutil.copytree(cache, target)
    return target


def _meta(directory: str) -> dict:
    with open(os.path.join(directory, "cache.json"), encoding="utf-8") as f:
        return json.load(f)


def _write_meta(directory: str, meta: dict) -> None:
    with open(os.path.join(directory, "cache.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f)


def _rewrite_shard(directory: str, change, reseal: bool) -> None:
    """Rewrite shard 1 with ``change(tensors)``; ``reseal`` updates its size and sha256 in cache.json
    (so the layout check, not the checksum, must catch it)."""
    path = os.path.join(directory, SHARD)
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)
    if reseal:
        meta = _meta(directory)
        old = meta["shards"][1]
        meta["shards"][1] = shard_entry(path, old["examples"], old["tokens"])
        _write_meta(directory, meta)


def test_metadata_records_size_and_checksum_and_verifies(cache) -> None:
    meta = verify_cache(cache)
    assert meta["num_examples"] == 7 and [s["examples"] for s in meta["shards"]] == [3, 3, 1]
    for entry in meta["shards"]:
        assert entry["bytes"] == os.path.getsize(os.path.join(cache, entry["name"]))
        assert len(entry["sha256"]) == 64
    assert len(load_cache(cache)[1]) == 7


def _truncate(d: str) -> None:
    path = os.path.join(d, SHARD)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _overwrite_header(d: str) -> None:
    with open(os.path.join(d, SHARD), "r+b") as f:
        f.write(b"\xff" * 16)


def _overwrite_header_resealed(d: str) -> None:
    _overwrite_header(d)
    meta = _meta(d)
    meta["shards"][1] = shard_entry(os.path.join(d, SHARD), 3, meta["shards"][1]["tokens"])
    _write_meta(d, meta)


def _offsets(t: dict) -> None:
    t["offsets"] = torch.zeros_like(t["offsets"])


def _indices(t: dict) -> None:
    t["topk_indices"] = t["topk_indices"] + 10_000


DAMAGE = {
    "truncated": (_truncate, f"{SHARD}: .* bytes, cache.json says"),
    "missing": (lambda d: os.remove(os.path.join(d, SHARD)), f"{SHARD}: shard missing"),
    "header overwritten": (_overwrite_header, f"{SHARD}: sha256 differs"),
    "header overwritten, resealed": (_overwrite_header_resealed, f"{SHARD}: not a readable safetensors"),
    "offsets corrupted": (lambda d: _rewrite_shard(d, _offsets, False), f"{SHARD}: sha256 differs"),
    "offsets corrupted, resealed": (
        lambda d: _rewrite_shard(d, _offsets, True),
        f"{SHARD}: corrupted offsets",
    ),
    "indices out of range, resealed": (lambda d: _rewrite_shard(d, _indices, True), "outside \\[0, "),
    "cache.json broken": (
        lambda d: open(os.path.join(d, "cache.json"), "w").write("{"),
        "cache.json: broken cache metadata",
    ),
    "cache.json field": (lambda d: _write_meta(d, {**_meta(d), "top_k": "4"}), "field 'top_k' should be"),
    "old format": (lambda d: _write_meta(d, {**_meta(d), "format": "fastkd-teacher-topk/1"}), "cache format"),
    "count": (lambda d: _write_meta(d, {**_meta(d), "num_examples": 9}), "hold 7 examples, num_examples"),
    "stray shard": (
        lambda d: shutil.copy(os.path.join(d, SHARD), os.path.join(d, "shard-00009.safetensors")),
        "shard-00009.safetensors is not listed",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damage_is_a_clear_error(cache, tmp_path, damage: str, capsys: pytest.CaptureFixture) -> None:
    directory = _copy(cache, tmp_path)
    corrupt, message = DAMAGE[damage]
    corrupt(directory)
    with pytest.raises(ValueError, match=message):
        verify_cache(directory)
    with pytest.raises(ValueError, match=message):
        load_cache(directory)
    assert main(["lm", "verify-cache", directory]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastkd: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_shard_size_must_be_positive(tiny_llama, tmp_path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match="shard_size must be an integer >= 1, got 0"):
        cache_teacher(tiny_llama, LM_DATA, 4, str(tmp_path), shard_size=0)
    argv = ["lm", "cache-teacher", "--teacher", tiny_llama, "--data", LM_DATA, "--top-k", "4"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--output", str(tmp_path), "--shard-size", "0"])
    assert exit_info.value.code == 2 and "--shard-size: must be >= 1, got 0" in capsys.readouterr().err
