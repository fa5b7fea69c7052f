"""The local runtime's DAG source: which source is chosen from the environment and the
repository's HEAD, what Airflow is pointed at, and what `up` does when the sync fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_control_plane.errors import ConfigError
from airflow_control_plane.local.airflow_env import (
    RELEASE_BUNDLE_CLASSPATH,
    AirflowEnvInputs,
    airflow_environment,
)
from airflow_control_plane.local.dag_source import (
    DagSource,
    GitHead,
    SourceMode,
    decide_after_failed_sync,
    decide_dag_source,
    read_git_head,
)
from airflow_control_plane.local.secrets_store import SharedKeys

pytestmark = pytest.mark.unit

ROOT = Path("/src/project")
FOLDER = ROOT / "dags"
STATE = Path("/state")
SHA = "a" * 40
HEAD = GitHead(SHA, "feature/x")


def _decide(env: dict[str, str], head: GitHead | None = HEAD) -> DagSource:
    return decide_dag_source(env, repo_root=ROOT, head=head, default_folder=FOLDER, state_root=STATE)


def test_default_publishes_the_own_repository_dags_at_the_current_branch() -> None:
    # GIVEN nothing configured and a git checkout on branch feature/x
    # WHEN the source is decided
    source = _decide({})
    # THEN DAG sync publishes dags/ of file://<root> at the branch into <state>/dags
    assert source.mode is SourceMode.GIT
    assert (source.repository, source.ref, source.subdir) == ("file:///src/project", "feature/x", "dags")
    assert source.folder == STATE / "dags"
    assert source.airflow_dags_folder == STATE / "dags" / "current"
    assert source.bundle_target == STATE / "dags"
    assert "committed DAGs only" in source.reason


def test_a_detached_head_publishes_the_commit_itself() -> None:
    # GIVEN a checkout on a detached HEAD
    source = _decide({}, GitHead(SHA, None))
    # THEN the ref is the commit id
    assert source.ref == SHA


def test_ref_and_subdir_overrides_apply_to_the_own_repository() -> None:
    source = _decide({"AFCTL_DAG_REPO_REF": "release", "AFCTL_DAG_REPO_SUBDIR": "other"})
    assert (source.ref, source.subdir) == ("release", "other")


def test_another_repository_with_a_token_variable() -> None:
    # GIVEN another repository configured, its ref left out
    env = {
        "AFCTL_DAG_REPO_URL": "https://git.example/team/dags.git",
        "AFCTL_DAG_REPO_SUBDIR": "airflow",
        "AFCTL_DAG_REPO_TOKEN_ENV": "DAGS_TOKEN",
    }
    # WHEN decided, even without a git checkout here
    source = _decide(env, head=None)
    # THEN that repository is synced at main, its token read from the named variable
    assert source.mode is SourceMode.GIT
    assert (source.repository, source.ref, source.subdir) == (env["AFCTL_DAG_REPO_URL"], "main", "airflow")
    assert source.token_env == "DAGS_TOKEN"


def test_folder_mode_reads_the_working_tree() -> None:
    # GIVEN AFCTL_DAGS_SOURCE=folder (any case)
    source = _decide({"AFCTL_DAGS_SOURCE": "Folder"})
    # THEN Airflow reads the folder itself, without a bundle target
    assert source.mode is SourceMode.FOLDER
    assert source.airflow_dags_folder == FOLDER
    assert source.bundle_target is None


def test_an_explicit_dags_folder_alone_means_folder_mode() -> None:
    source = _decide({"AFCTL_DAGS_FOLDER": "/somewhere"})
    assert source.mode is SourceMode.FOLDER
    assert "AFCTL_DAGS_FOLDER is set" in source.reason


def test_explicit_git_mode_wins_over_an_explicit_folder() -> None:
    source = _decide({"AFCTL_DAGS_FOLDER": "/somewhere", "AFCTL_DAGS_SOURCE": "git"})
    assert source.mode is SourceMode.GIT


def test_not_a_git_checkout_falls_back_to_folder_mode_with_a_note() -> None:
    # GIVEN a tarball of the project (no HEAD)
    source = _decide({}, head=None)
    # THEN the working-tree folder is read and the reason says why
    assert source.mode is SourceMode.FOLDER
    assert "not a git checkout" in source.reason


@pytest.mark.parametrize(
    ("env", "head", "message"),
    [
        ({"AFCTL_DAGS_SOURCE": "svn"}, HEAD, "must be 'git' or 'folder'"),
        ({"AFCTL_DAGS_SOURCE": "folder", "AFCTL_DAG_REPO_URL": "file:///x"}, HEAD, "contradict"),
        ({"AFCTL_DAGS_SOURCE": "git"}, None, "has no git commit"),
    ],
)
def test_contradictory_or_impossible_settings_fail_loudly(
    env: dict[str, str], head: GitHead | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _decide(env, head)


def test_a_failed_sync_keeps_a_live_release_and_stops_without_one() -> None:
    # GIVEN a failed sync
    # WHEN a release is live THEN up goes on with it, naming it
    kept = decide_after_failed_sync("b" * 40, "DAG sync failed: dags/x.py:3: invalid syntax")
    assert kept.proceed
    assert "keeps release bbbbbbbbbbbb" in kept.reason
    assert "dags/x.py:3" in kept.reason
    # WHEN nothing was ever published THEN up stops, with the sync's error
    stopped = decide_after_failed_sync(None, "DAG sync failed: dags/x.py:3: invalid syntax")
    assert not stopped.proceed
    assert "dags/x.py:3" in stopped.reason


def _inputs(target: Path | None) -> AirflowEnvInputs:
    return AirflowEnvInputs(
        airflow_home=Path("/h"),
        dags_folder=Path("/t/current") if target else FOLDER,
        sqlalchemy_url="postgresql+psycopg2://u@h/d",
        broker_url="redis://h/0",
        keys=SharedKeys("f", "s", "j"),
        api_host="127.0.0.1",
        api_port=8080,
        api_workers=1,
        worker_concurrency=2,
        state_dir=Path("/s"),
        dag_bundle_target=target,
    )


def test_airflow_reads_the_release_target_through_release_dag_bundle() -> None:
    # GIVEN git mode (a bundle target)
    env = airflow_environment(_inputs(Path("/t")))
    # THEN every component gets one ReleaseDagBundle over the target, checked every second (its
    # refresh reads one symlink), dags_folder on current, and no bytecode written next to the releases
    bundles = json.loads(env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"])
    kwargs = {"target": "/t", "refresh_interval": 1}
    assert bundles == [{"name": "dags", "classpath": RELEASE_BUNDLE_CLASSPATH, "kwargs": kwargs}]
    assert env["AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL"] == "1"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/t/current"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_folder_mode_keeps_airflows_default_bundle() -> None:
    env = airflow_environment(_inputs(None))
    assert "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST" not in env
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(FOLDER)


def test_read_git_head_of_a_plain_folder_is_none(tmp_path: Path) -> None:
    # GIVEN a folder that is not a git checkout THEN there is no HEAD to publish
    assert read_git_head(tmp_path) is None
