"""Config readers fail loudly, naming the variable, instead of defaulting silently."""

from __future__ import annotations

import pytest

from airflow_control_plane.config import optional_bool, optional_int, optional_str, require_str
from airflow_control_plane.errors import ConfigError

pytestmark = pytest.mark.unit


def test_require_str_returns_the_stripped_value() -> None:
    assert require_str("CLUSTER", {"CLUSTER": "  airflow-dev "}) == "airflow-dev"


@pytest.mark.parametrize("env", [{}, {"CLUSTER": ""}, {"CLUSTER": "   "}])
def test_require_str_names_the_missing_variable(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="CLUSTER is required"):
        require_str("CLUSTER", env)


def test_optional_str_defaults_only_when_unset() -> None:
    assert optional_str("QUEUE", "default", {}) == "default"
    assert optional_str("QUEUE", "default", {"QUEUE": "gpu"}) == "gpu"


def test_optional_int_parses_defaults_and_enforces_minimum() -> None:
    assert optional_int("N", 3, {}) == 3
    assert optional_int("N", 3, {"N": "7"}) == 7
    with pytest.raises(ConfigError, match="N must be an integer, got 'seven'"):
        optional_int("N", 3, {"N": "seven"})
    with pytest.raises(ConfigError, match="N must be >= 0, got -1"):
        optional_int("N", 3, {"N": "-1"}, minimum=0)


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("YES", True), ("1", True), ("off", False)])
def test_optional_bool_accepts_the_usual_spellings(raw: str, expected: bool) -> None:
    assert optional_bool("DRY_RUN", not expected, {"DRY_RUN": raw}) is expected


def test_optional_bool_rejects_anything_else() -> None:
    with pytest.raises(ConfigError, match="DRY_RUN must be a boolean"):
        optional_bool("DRY_RUN", False, {"DRY_RUN": "maybe"})
