"""The one thread pool: CPUs from the affinity mask capped by the cgroup quota; user settings win."""

import math
import os
import subprocess
import sys

import pytest

from fastkd.trainer import threads


def test_cgroup_quota_v2_and_v1(tmp_path) -> None:
    v2 = tmp_path / "cpu.max"
    v1 = (str(tmp_path / "quota"), str(tmp_path / "period"))
    v2.write_text("150000 100000\n")
    assert threads.cgroup_cpu_limit(str(v2), v1) == 1.5
    v2.write_text("max 100000\n")
    assert threads.cgroup_cpu_limit(str(v2), v1) is None
    (tmp_path / "quota").write_text("50000")
    (tmp_path / "period").write_text("100000")
    assert threads.cgroup_cpu_limit(str(tmp_path / "absent"), v1) == 0.5
    (tmp_path / "quota").write_text("-1")
    assert threads.cgroup_cpu_limit(str(tmp_path / "absent"), v1) is None


def test_available_cpus_takes_the_smaller(monkeypatch) -> None:
    affinity = len(os.sched_getaffinity(0))
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.available_cpus() == affinity
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 0.5)
    assert threads.available_cpus() == 1
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: affinity + 4.0)
    assert threads.available_cpus() == affinity == min(affinity, math.ceil(affinity + 4.0))


def _configured(env: dict[str, str]) -> list[str]:
    code = (
        "from fastkd.trainer.threads import configure_threads; configure_threads(); import os, torch; "
        "print(torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'], os.environ['TOKENIZERS_PARALLELISM'])"
    )
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "TOKENIZERS_PARALLELISM")
    }
    result = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=120
    )
    return result.stdout.split()


def test_configure_sets_defaults_before_torch_and_keeps_the_users() -> None:
    assert _configured({}) == [str(threads.available_cpus()), "PASSIVE", "false"]
    assert _configured(
        {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE", "TOKENIZERS_PARALLELISM": "true"}
    ) == [
        "1",
        "ACTIVE",
        "true",
    ]


def test_empty_thread_count_is_unset_and_a_bad_one_is_named(monkeypatch) -> None:
    assert _configured({"OMP_NUM_THREADS": ""})[0] == str(threads.available_cpus())
    for bad in ("two", "0", "-3"):
        monkeypatch.setenv("OMP_NUM_THREADS", bad)
        with pytest.raises(ValueError, match=f"OMP_NUM_THREADS='{bad}' is not a positive integer"):
            threads.configure_threads()


def test_info_uses_backend_report_when_there_is_one(monkeypatch) -> None:
    from fastkd import backends
    from fastkd.trainer.commands.info import backends as rows

    monkeypatch.delattr(backends, "backend_report", raising=False)
    fallback = rows()
    assert fallback["cpu"].startswith("usable" if backends.extension_available() else "not built")
    monkeypatch.setattr(backends, "backend_report", lambda: {"cpu": "built, usable"}, raising=False)
    assert rows() == {"cpu": "built, usable"}
    monkeypatch.setattr(backends, "backend_report", lambda: 1 / 0, raising=False)
    assert "ZeroDivisionError" in next(iter(rows().values()))
