"""The TRL internals fastkd's subclasses override are where TRL 1.16 has them; the pins agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

trl = pytest.importorskip("trl", reason="trl is not installed (pip install -e '.[trl]')")

from fastkd.integrations.trl import compat  # noqa: E402

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def test_no_overridden_internal_has_moved() -> None:
    problems = compat.moved_internals()
    assert not problems, "TRL internals that fastkd.integrations.trl overrides have moved:\n" + "\n".join(
        problems
    )


def test_installed_trl_is_in_the_tested_range() -> None:
    assert compat.tested_version(trl.__version__), trl.__version__


def test_a_moved_internal_is_reported() -> None:
    class Renamed:
        def _compute_loss(self, student, inputs, num_items_in_batch): ...

    problems = compat._moved(Renamed, compat.DISTILLATION_INTERNALS)
    assert any("_compute_loss takes" in p for p in problems)
    assert any("_get_last_hidden_state is gone" in p for p in problems)


def test_extras_pin_the_tested_range() -> None:
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    low, high = compat.TESTED_RANGE
    pin = f"trl>={low},<{high}"
    assert pin in extras["trl"] and pin in extras["dev"]


def test_out_of_range_trl_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compat.trl, "__version__", "1.17.0")
    with pytest.warns(UserWarning, match="tested with trl >= 1.16, < 1.17; found 1.17.0"):
        compat.check_trl()
