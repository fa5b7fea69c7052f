"""The three locks stay consistent: every package the Lambdas ship has the same pinned
version in the Airflow/local-runtime lock and in the dev lock, and every entry is hashed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
LOCKS = {
    "lambda": ROOT / "functions/common/requirements.txt",
    "airflow": ROOT / "airflow_image/requirements.txt",
    "dev": ROOT / "tests/requirements.txt",
    "local-fallback": ROOT / "functions/common/local-requirements.txt",
}
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;\\]+)")


def parse_lock(path: Path) -> dict[str, str]:
    """Map normalised package name -> pinned version; fail on any unpinned or unhashed entry."""
    pins: dict[str, str] = {}
    text = path.read_text()
    entries = re.split(r"\n(?=\S)", text)
    for entry in entries:
        first = entry.strip().splitlines()[0] if entry.strip() else ""
        if not first or first.startswith("#"):
            continue
        match = _PIN.match(first)
        assert match, f"{path.name}: entry is not pinned with ==: {first!r}"
        assert "--hash=sha256:" in entry, f"{path.name}: {match.group(1)} has no hash"
        pins[match.group(1).lower().replace("_", "-").replace(".", "-")] = match.group(2)
    assert pins, f"{path} holds no pins"
    return pins


def test_every_lock_is_pinned_and_hashed() -> None:
    for path in LOCKS.values():
        parse_lock(path)


def test_lambda_packages_have_the_same_versions_everywhere() -> None:
    lam, air, dev = (parse_lock(LOCKS[k]) for k in ("lambda", "airflow", "dev"))
    for name, version in lam.items():
        assert air.get(name) == version, f"{name}: lambda {version} vs airflow lock {air.get(name)}"
        assert dev.get(name) == version, f"{name}: lambda {version} vs dev lock {dev.get(name)}"


def test_local_fallback_lock_agrees_with_the_runtime_lock() -> None:
    # The runtime venv installs both files together; a shared package must not differ.
    air, local = parse_lock(LOCKS["airflow"]), parse_lock(LOCKS["local-fallback"])
    for name in air.keys() & local.keys():
        assert air[name] == local[name], f"{name}: airflow lock {air[name]} vs local lock {local[name]}"


def test_airflow_lock_holds_a_working_celery_set() -> None:
    air = parse_lock(LOCKS["airflow"])
    assert air["apache-airflow"].startswith("3.3.")
    major, minor = (int(x) for x in air["celery"].split(".")[:2])
    assert (major, minor) < (5, 7), "celery 5.7 breaks apache-airflow-providers-celery 3.26.0"
