"""AFCTL_FLOWER: off by default, a malformed value fails loudly; the generated pair fits
Flower's basic-auth setting and is reused."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_control_plane.errors import ConfigError
from airflow_control_plane.local.airflow_env import flower_spec
from airflow_control_plane.local.secrets_store import load_or_create_flower_credentials
from airflow_control_plane.local.settings import LocalSettings

pytestmark = pytest.mark.unit


def test_flower_is_off_by_default_and_can_be_turned_on(tmp_path: Path) -> None:
    base = {"AFCTL_STATE_DIR": str(tmp_path)}
    assert LocalSettings.from_env(base).flower is False
    on = LocalSettings.from_env({**base, "AFCTL_FLOWER": "true", "AFCTL_FLOWER_PORT": "15555"})
    assert (on.flower, on.flower_port) == (True, 15555)


@pytest.mark.parametrize(("name", "value"), [("AFCTL_FLOWER", "maybe"), ("AFCTL_FLOWER_PORT", "70000")])
def test_bad_flower_settings_fail_loudly(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        LocalSettings.from_env({"AFCTL_STATE_DIR": str(tmp_path), name: value})


def test_the_generated_pair_is_reused_and_fits_flowers_setting(tmp_path: Path) -> None:
    path = tmp_path / "flower-credentials.json"
    first = load_or_create_flower_credentials(path, token=lambda n: b"\x01" * n)
    assert load_or_create_flower_credentials(path) == first
    assert not set(first.password) & {":", ",", " "}
    spec = flower_spec("airflow", 5555, first.username, first.password)
    assert first.password not in " ".join(spec.argv)
    assert spec.argv[-2:] == ("--url-prefix", "flower")
    assert spec.max_count == 1
