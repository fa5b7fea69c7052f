"""samconfig.toml: its two configurations override only parameters the template has, with
values the template accepts."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.static.tools import load_template

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
OVERRIDE = re.compile(r'(\w+)="([^"]*)"')


@pytest.fixture(scope="module")
def samconfig() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "samconfig.toml").read_text())


@pytest.fixture(scope="module")
def parameters() -> dict[str, Any]:
    return load_template(REPO_ROOT / "template.yaml")["Parameters"]


def overrides(samconfig: dict[str, Any], env: str) -> dict[str, str]:
    return dict(OVERRIDE.findall(samconfig[env]["deploy"]["parameters"]["parameter_overrides"]))


@pytest.mark.parametrize("env", ["default", "production"])
def test_overrides_are_valid_parameter_values(
    samconfig: dict[str, Any], parameters: dict[str, Any], env: str
) -> None:
    # GIVEN a configuration's parameter overrides
    given = overrides(samconfig, env)
    assert given
    for name, value in given.items():
        # THEN each names a template parameter and satisfies its constraints
        assert name in parameters, name
        spec = parameters[name]
        if "AllowedValues" in spec:
            assert value in [str(v) for v in spec["AllowedValues"]], (name, value)
        if "AllowedPattern" in spec:
            assert re.fullmatch(spec["AllowedPattern"], value), (name, value)


def test_production_differs_where_it_matters(samconfig: dict[str, Any]) -> None:
    dev, prod = overrides(samconfig, "default"), overrides(samconfig, "production")
    assert (
        samconfig["default"]["global"]["parameters"]["stack_name"]
        != (samconfig["production"]["global"]["parameters"]["stack_name"])
    )
    assert dev["DeploymentType"] == "development"
    assert prod["DeploymentType"] == "production"
    assert dev["EnvironmentName"] != prod["EnvironmentName"]


@pytest.mark.parametrize("env", ["default", "production"])
def test_builds_without_containers_and_schedules_start_off(samconfig: dict[str, Any], env: str) -> None:
    assert samconfig[env]["build"]["parameters"]["use_container"] is False
    assert overrides(samconfig, env)["SchedulesEnabled"] == "false"
    # AND the image is never defaulted: a deploy without it stops before creating anything
    assert "AirflowImageUri" not in overrides(samconfig, env)
