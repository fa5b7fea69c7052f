"""`afctl status` after a refused DAG sync, `afctl sync`'s warning about uncommitted DAGs, and
a failed sync that leaves no folders behind: real git repositories and the real `afctl`
process from the runtime environment; no Airflow service is started.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import AirflowRuntime
from tests.harness import GitRepo, clean_env, run_afctl

pytestmark = pytest.mark.integration

GOOD_DAG = '"""alpha."""\n\nVALUE = 1\n'
BROKEN_DAG = "def oops(:\n    pass\n"


def _afctl(runtime: AirflowRuntime, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_afctl(runtime.afctl, env, *args, timeout=120)


@pytest.fixture
def local(tmp_path: Path) -> tuple[GitRepo, dict[str, str]]:
    """A local environment's state folder (never brought up) whose DAG source is a test repo."""
    repo = GitRepo.create(tmp_path / "repo")
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.json").write_text("{}")
    return repo, clean_env(AFCTL_STATE_DIR=str(state), AFCTL_DAG_REPO_URL=repo.url)


def test_status_shows_the_live_release_and_the_last_refused_sync(
    airflow_runtime: AirflowRuntime, local: tuple[GitRepo, dict[str, str]]
) -> None:
    repo, env = local
    # GIVEN a published commit
    sha = repo.commit({"alpha.py": GOOD_DAG}, "good")
    published = _afctl(airflow_runtime, env, "sync")
    assert published.returncode == 0, published.stdout + published.stderr
    # WHEN a commit that does not compile is synced
    repo.commit({"broken.py": BROKEN_DAG}, "broken")
    refused = _afctl(airflow_runtime, env, "sync")
    assert refused.returncode == 3, refused.stdout + refused.stderr  # 3: refused, as documented
    # THEN status (as JSON and as text) shows the release still live and the refusal with its reason
    out = _afctl(airflow_runtime, env, "status", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["live_release"].startswith(sha)
    assert report["last_refused_sync"]["action"] == "refused"
    assert "broken.py" in report["last_refused_sync"]["reason"]
    assert report["supervisor_running"] is False
    text = _afctl(airflow_runtime, env, "status")
    assert f"live release: {report['live_release']}" in text.stdout
    assert "last sync at" in text.stdout
    assert "broken.py" in text.stdout


def test_sync_warns_about_uncommitted_dag_changes_and_says_how_to_publish(
    airflow_runtime: AirflowRuntime, local: tuple[GitRepo, dict[str, str]]
) -> None:
    repo, env = local
    # GIVEN a commit, then an edit that is not committed
    repo.commit({"alpha.py": GOOD_DAG}, "good")
    (repo.path / "alpha.py").write_text(GOOD_DAG + "VALUE = 2\n")
    # WHEN it is synced
    out = _afctl(airflow_runtime, env, "sync")
    # THEN the commit is published, and the edit is named with the two ways to publish it
    assert out.returncode == 0, out.stdout + out.stderr
    assert "uncommitted DAG change(s) are not published: alpha.py" in out.stderr
    assert "AFCTL_DAGS_SOURCE=folder" in out.stderr


def test_a_failed_sync_leaves_no_target_folders_behind(
    airflow_runtime: AirflowRuntime, tmp_path: Path
) -> None:
    # GIVEN a repository URL that does not exist and a target whose folders do not exist yet
    target = tmp_path / "new" / "dags"
    env = clean_env()
    missing = (tmp_path / "no-such-repo").as_uri()
    # WHEN the sync fails
    out = _afctl(airflow_runtime, env, "sync", "--repo", missing, "--target", str(target))
    # THEN it fails with one clear line and created nothing
    assert out.returncode == 2, out.stdout + out.stderr
    assert "error:" in out.stderr
    assert not (tmp_path / "new").exists()
