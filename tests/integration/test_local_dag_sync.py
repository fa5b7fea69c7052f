"""`afctl up` publishes DAGs with the real DAG sync core, and real Airflow reads one resolved
release through ReleaseDagBundle; `afctl sync` publishes new commits to the running
environment; a broken commit is refused and the environment stays on its release; folder
mode reads a working tree directly.

One local environment (real Airflow processes, PostgreSQL, Redis) serves the module; the tests
run in file order against it and its DAG source is a git repository made in the test. The
fixture always tears down and kills any process still carrying the state folder's marker.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from airflow_control_plane.dagsync.release import release_id_for
from airflow_control_plane.local.hibernate import sweep_strays
from tests.conftest import AirflowRuntime, PostgresDatabase, RedisDatabase
from tests.harness import (
    DOWN_TIMEOUT_S,
    GitRepo,
    LocalEnv,
    local_env_settings,
    run_afctl,
    wait_for,
)

pytestmark = pytest.mark.integration

SEEN_TIMEOUT_S = 180  # refresh_interval is 10 s; parsing on two shared cores takes its time
NO_WORKERS = {"AFCTL_WORKERS_MIN": "0"}  # no task runs here: spare the shared CPU

DAG_TEMPLATE = '''"""{name}: a DAG of the DAG sync tests."""

from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="{name}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False)
def build():
    @task
    def hello():
        return "{name}"

    hello()


build()
'''
BROKEN_DAG = "from airflow.sdk import dag\n\n\ndef oops(:\n    pass\n"


def _dag(name: str) -> str:
    return DAG_TEMPLATE.format(name=name)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> GitRepo:
    return GitRepo.create(tmp_path_factory.mktemp("dagrepo") / "repo")


@pytest.fixture(scope="module")
def local_env(
    local_environments: Callable[..., AbstractContextManager[LocalEnv]], repo: GitRepo
) -> Iterator[LocalEnv]:
    with local_environments(
        "dagsync",
        **NO_WORKERS,
        AFCTL_DAG_REPO_URL=repo.url,
        AFCTL_DAG_REPO_REF="main",
        AFCTL_DAG_REPO_SUBDIR="dags",
    ) as local:
        yield local


@pytest.fixture(scope="module")
def first_up(local_env: LocalEnv, repo: GitRepo) -> tuple[str, subprocess.CompletedProcess[str]]:
    sha = repo.commit({"dags/alpha.py": _dag("alpha"), "README.md": "not a DAG\n"}, "alpha")
    out = local_env.run("up")
    assert out.returncode == 0, f"afctl up failed:\n{out.stdout}\n{out.stderr}"
    return sha, out


def test_a_broken_first_commit_stops_up_before_any_service_starts(
    airflow_runtime: AirflowRuntime,
    pg_database_factory: Callable[[str], PostgresDatabase],
    redis_database: RedisDatabase,
    tmp_path: Path,
) -> None:
    # GIVEN a DAG repository whose only commit has a DAG file that does not compile
    repo = GitRepo.create(tmp_path / "repo")
    repo.commit({"dags/broken.py": BROKEN_DAG}, "broken")
    state = tmp_path / "state"
    env = local_env_settings(
        state,
        pg_database_factory("dagsyncfail"),
        redis_database,
        **NO_WORKERS,
        AFCTL_DAG_REPO_URL=repo.url,
        AFCTL_DAG_REPO_SUBDIR="dags",
    )
    # WHEN `afctl up` runs
    out = run_afctl(airflow_runtime.afctl, env, "up", timeout=120)
    # THEN it stops with the sync's error naming file and line, and nothing was started or published
    try:
        assert out.returncode == 2, out.stdout + out.stderr
        assert "broken.py:4" in out.stderr, out.stderr
        assert "sync_dags FAILED" in out.stdout
        assert "start_core_services" not in out.stdout
        assert not (state / "run" / "supervisor.pid").exists()
        assert not (state / "dags" / "current").exists()
    finally:
        sweep_strays(str(state), grace_s=5.0)


def test_up_publishes_the_repository_and_airflow_lists_its_dags(
    local_env: LocalEnv, first_up: tuple[str, subprocess.CompletedProcess[str]]
) -> None:
    sha, out = first_up
    # GIVEN `up` ran with the test repository as the DAG source
    # THEN the sync ran before the services, printed with its duration
    assert "[dags] sync_dags done in" in out.stdout, out.stdout
    assert out.stdout.index("sync_dags done") < out.stdout.index("start_core_services")
    # AND current points at the commit's release, holding the DAG files only (subdir dags/)
    assert local_env.live_release() == release_id_for(sha, "dags")
    assert sorted(p.name for p in (local_env.dags_target / "current").glob("*.py")) == ["alpha.py"]
    # AND real Airflow lists the DAG
    api = local_env.api()
    seconds = wait_for(lambda: "alpha" in api.dag_ids(), SEEN_TIMEOUT_S, "alpha in /api/v2/dags")
    print(f"alpha listed {seconds:.1f} s after up returned")


def test_a_new_commit_synced_with_afctl_sync_appears_without_a_restart(
    local_env: LocalEnv, repo: GitRepo, first_up: object
) -> None:
    # GIVEN the running environment and its processes
    before = local_env.pids()
    # WHEN a commit adds a DAG and the operator runs `afctl sync` (no --target: the local one)
    sha = repo.commit({"dags/beta.py": _dag("beta")}, "beta")
    out = local_env.run("sync", timeout=120)
    # THEN it is published into the local target and says so
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"into {local_env.dags_target}" in out.stdout
    assert out.stdout.count("published") >= 1, out.stdout
    assert local_env.live_release() == release_id_for(sha, "dags")
    # AND Airflow lists the new DAG within a bounded time, with no process restarted
    api = local_env.api()
    seconds = wait_for(lambda: "beta" in api.dag_ids(), SEEN_TIMEOUT_S, "beta in /api/v2/dags")
    print(f"beta listed {seconds:.1f} s after `afctl sync` returned")
    assert local_env.pids() == before


def test_dag_runs_and_versions_record_the_release_sha(
    local_env: LocalEnv, repo: GitRepo, first_up: object
) -> None:
    # GIVEN beta, published at the live commit: release id = commit SHA (+ a suffix naming the subdir)
    release = local_env.live_release()
    assert release.startswith(repo.head())
    # WHEN a run is created through the REST API
    run = local_env.api().call("POST", "/dags/beta/dagRuns", {"logical_date": None})
    # THEN the run and the DAG version carry the bundle version: the release of the commit
    run_rows = local_env.query(
        "SELECT bundle_version FROM dag_run WHERE dag_id = 'beta' AND run_id = :r", r=run["dag_run_id"]
    )
    version_rows = local_env.query(
        "SELECT bundle_name, bundle_version FROM dag_version WHERE dag_id = 'beta'"
    )
    assert run_rows == [[release]]
    assert version_rows == [["dags", release]]


def test_a_broken_commit_is_refused_and_the_environment_stays_on_its_release(
    local_env: LocalEnv, repo: GitRepo, first_up: object
) -> None:
    # GIVEN the live release and the running processes
    live = local_env.live_release()
    before = local_env.pids()
    # WHEN a commit with a DAG file that does not compile is synced
    repo.commit({"dags/broken.py": BROKEN_DAG}, "broken")
    out = local_env.run("sync", timeout=120)
    # THEN it is refused (exit 3, as every refusal) with file:line, and current stays where it was
    assert out.returncode == 3, out.stdout + out.stderr
    assert "refused: 1 file(s) do not compile: broken.py:4" in out.stdout, out.stdout
    assert local_env.live_release() == live
    assert not (local_env.dags_target / "current" / "broken.py").exists()
    # AND the environment keeps running and serving the DAGs it had
    assert local_env.pids() == before
    assert {"alpha", "beta"} <= local_env.api().dag_ids()
    # WHEN `up` runs again with the broken commit still at the tip
    again = local_env.run("up")
    # THEN it goes on with the live release (nothing destructive) and says why
    assert again.returncode == 0, again.stdout + again.stderr
    assert "keeps release" in again.stdout, again.stdout
    assert "broken.py:4" in again.stdout
    assert local_env.live_release() == live
    assert local_env.pids() == before


def test_folder_mode_reads_the_working_tree(local_env: LocalEnv, first_up: object, tmp_path: Path) -> None:
    # GIVEN the environment hibernated, and an uncommitted DAG in a plain folder
    down = local_env.run("down", "--force", timeout=DOWN_TIMEOUT_S)
    assert down.returncode == 0, down.stdout + down.stderr
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "gamma.py").write_text(_dag("gamma"))
    local_env.env = {
        **{k: v for k, v in local_env.env.items() if not k.startswith("AFCTL_DAG_REPO_")},
        "AFCTL_DAGS_SOURCE": "folder",
        "AFCTL_DAGS_FOLDER": str(folder),
    }
    # WHEN `up` runs in folder mode
    out = local_env.run("up")
    # THEN nothing is synced and Airflow reads the folder itself
    assert out.returncode == 0, out.stdout + out.stderr
    assert "AFCTL_DAGS_SOURCE=folder" in out.stdout
    assert "sync_dags" not in out.stdout
    api = local_env.api()
    wait_for(lambda: "gamma" in api.dag_ids(), SEEN_TIMEOUT_S, "gamma in /api/v2/dags")
    # AND `afctl sync` explains there is nothing to sync
    refused = local_env.run("sync", timeout=60)
    assert refused.returncode == 2
    assert "reads DAGs from a folder" in refused.stderr
