"""Airflow reads a synced target through ReleaseDagBundle: one refresh, one resolved release.

Runs real Airflow (the runtime environment) against a target built by a real sync.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from airflow_control_plane.dagsync.events import InMemoryPublisher
from airflow_control_plane.dagsync.git_source import DulwichGitSource
from airflow_control_plane.dagsync.request import SyncRequest
from airflow_control_plane.dagsync.service import Clock, SyncSettings, sync_once
from tests.conftest import AirflowRuntime
from tests.harness import GitRepo

pytestmark = pytest.mark.integration

DAG = """from datetime import datetime

from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG(dag_id="{dag_id}", start_date=datetime(2026, 1, 1), schedule=None):
    EmptyOperator(task_id="noop")
"""

# Runs inside the Airflow runtime: print what the bundle sees, wait for a switch, print again.
PROBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.utils.file import list_py_file_paths
from airflow_control_plane.dagsync.airflow_bundle import ReleaseDagBundle

target, pinned = sys.argv[1], sys.argv[2]
bundle = ReleaseDagBundle(name="dags", target=target, refresh_interval=10)
bundle.initialize()
bundle.refresh()
files = sorted(str(p) for p in list_py_file_paths(bundle.path))
bag = DagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name="dags")
seen = {"path": str(bundle.path), "version": bundle.get_current_version(), "files": files,
        "dags": sorted(bag.dag_ids), "errors": {k: str(v) for k, v in bag.import_errors.items()}}
print("PROBE " + json.dumps(seen), flush=True)
sys.stdin.readline()  # the test switches `current` now
before = str(bundle.path)
bundle.refresh()
old = ReleaseDagBundle(name="dags", target=target, version=pinned)
old.initialize()
after = {"before_refresh": before, "after_refresh": str(bundle.path), "pinned": str(old.path)}
print("PROBE " + json.dumps(after), flush=True)
"""


def _commit(repo: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    GitRepo(repo).git("add", "-A")
    GitRepo(repo).git("commit", "-q", "-m", "c")
    return GitRepo(repo).git("rev-parse", "HEAD").strip()


def _sync(url: str, target: Path, cache: Path) -> str:
    settings = SyncSettings(url, "main", target)
    clock = Clock(time.time, time.monotonic, lambda: uuid.uuid4().hex)
    return sync_once(
        settings, SyncRequest("manual"), DulwichGitSource(url, cache), InMemoryPublisher(), clock
    ).sha


def _read_probe(probe: subprocess.Popen[str]) -> dict[str, object]:
    """The next PROBE line (Airflow may log to stdout too); fail with the probe's stderr if it died."""
    assert probe.stdout is not None
    for line in probe.stdout:
        if line.startswith("PROBE "):
            data = json.loads(line[len("PROBE ") :])
            assert isinstance(data, dict)
            return data
    pytest.fail(f"the Airflow probe failed: {probe.communicate(timeout=60)[1][-3000:]}")


def test_airflow_parses_one_resolved_release_and_workers_get_the_pinned_one(
    tmp_path: Path, airflow_runtime: AirflowRuntime
) -> None:
    # GIVEN a synced target with DAGs in shared folders and two identical packages
    repo = tmp_path / "origin"
    repo.mkdir()
    GitRepo(repo).git("init", "-q", "-b", "main")
    first = _commit(
        repo,
        {
            "team_a/first.py": DAG.format(dag_id="first"),
            "team_b/second.py": DAG.format(dag_id="second"),
            "pkg_one/__init__.py": "",
            "pkg_two/__init__.py": "",
        },
    )
    url, target, cache = f"file://{repo}", tmp_path / "dags", tmp_path / "cache"
    assert _sync(url, target, cache) == first
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    python = str(airflow_runtime.python)
    probe = subprocess.Popen(
        [python, "-c", PROBE, str(target), first],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert probe.stdout is not None
        assert probe.stdin is not None
        seen = _read_probe(probe)
        # WHEN a new commit is published while that parse is pinned
        second = _commit(repo, {"team_a/third.py": DAG.format(dag_id="third")})
        assert _sync(url, target, cache) == second
        probe.stdin.write("\n")
        probe.stdin.flush()
        after = _read_probe(probe)
        _out, err = probe.communicate(timeout=120)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait(timeout=30)
    assert probe.returncode == 0, err[-3000:]
    # THEN Airflow walked the release (through its shared folders, with no loop error) and loaded both DAGs
    release = str(target / "releases" / first)
    assert seen["path"] == release
    assert seen["version"] == first
    assert seen["dags"] == ["first", "second"]
    assert seen["errors"] == {}
    assert {Path(f).relative_to(release).as_posix() for f in seen["files"]} >= {
        "team_a/first.py",
        "team_b/second.py",
    }
    # AND the switch reached the bundle only at its next refresh; a worker pinned to the old version keeps it
    assert after["before_refresh"] == release
    assert after["after_refresh"] == str(target / "releases" / second)
    assert after["pinned"] == release
