"""One test per DAG sync defect found by crash loops and reviews: the git cache after a kill, the
same ordering with any cache state, odd names, a 404, a trickling server, and retention of
releases that DAG runs still use (real git, real HTTP servers, real PostgreSQL with Airflow's
schema)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from airflow_control_plane.commands.bench_dagsync import serve_http
from airflow_control_plane.dagsync.errors import (
    GitCacheError,
    ReleaseValidationError,
    RepositoryNotFoundError,
    SyncDeadlineError,
)
from airflow_control_plane.dagsync.events import SYNC_FAILED
from airflow_control_plane.dagsync.git_source import DulwichGitSource
from airflow_control_plane.dagsync.in_use import PostgresReleasesInUse, StaticReleasesInUse
from airflow_control_plane.dagsync.request import SyncRequest
from airflow_control_plane.dagsync.service import SyncResult, SyncSettings, sync_once
from tests.conftest import PostgresDatabase
from tests.integration.test_dagsync_sync import Env, _dags

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def _cache_dir(env: Env) -> Path:
    (entry,) = [p for p in env.cache.iterdir() if p.is_dir()]
    return entry


# -- the git cache ---------------------------------------------------------------------------------


def test_a_cache_killed_inside_its_initialisation_is_rebuilt_by_the_next_sync(env: Env) -> None:
    # GIVEN a sync killed while dulwich created the bare repository (half a layout, no HEAD)
    sha = env.repo.commit(_dags(3, "a"))
    env.sync()
    cache = _cache_dir(env)
    shutil.rmtree(cache)
    (cache / "branches").mkdir(parents=True)
    (cache / "objects").mkdir()
    # WHEN the next sync runs THEN it succeeds on its first try
    env.repo.commit(_dags(3, "b"))
    result = env.sync()
    assert result.action == "published"
    assert any("without a complete layout" in w for w in result.warnings)
    assert env.live_sha() != sha


def test_stale_lock_files_of_a_killed_fetch_are_removed_on_the_first_retry(env: Env) -> None:
    # GIVEN a cache with the lock files a kill leaves: a ref lock and a pack index lock
    env.repo.commit(_dags(3, "a"))
    env.sync()
    cache = _cache_dir(env)
    (cache / "refs" / "heads" / "dagsync-fetched.lock").write_text("x")
    pack_dir = cache / "objects" / "pack"
    pack_dir.mkdir(parents=True, exist_ok=True)
    (pack_dir / "pack-0123456789abcdef0123456789abcdef01234567.idx.lock").write_text("x")
    (pack_dir / "pack-0123456789abcdef0123456789abcdef01234567.pack").write_bytes(b"PACK-half")
    # WHEN the next commit is synced THEN it is published on the first try, and the repair is reported
    second = env.repo.commit(_dags(3, "b"))
    result = env.sync()
    assert (result.action, result.sha) == ("published", second)
    repaired = " ".join(result.warnings)
    assert "dagsync-fetched.lock" in repaired
    assert "incomplete pack file" in repaired


def test_a_corrupt_cache_is_rebuilt_and_its_error_names_the_cache(env: Env) -> None:
    # GIVEN a cache whose every pack was overwritten with garbage
    env.repo.commit(_dags(3, "a"))
    env.sync()
    cache = _cache_dir(env)
    for pack in (cache / "objects" / "pack").glob("pack-*"):
        pack.write_bytes(b"garbage")
    for loose in (cache / "objects").glob("??/*"):
        loose.write_bytes(b"garbage")
    # WHEN a new commit is synced THEN it is published anyway (the cache is rebuilt and refetched)
    second = env.repo.commit(_dags(3, "b"))
    result = env.sync()
    assert (result.action, result.sha) == ("published", second)
    # AND a cache that cannot be created at all is reported as the cache, not as the remote
    blocked = env.tmp / "blocked"
    blocked.write_text("a file where the cache folder should be")
    source = DulwichGitSource(env.repo.url, blocked / "cache")
    settings = SyncSettings(env.repo.url, "main", env.tmp / "other-target")
    with pytest.raises(GitCacheError, match=str(blocked)):
        sync_once(settings, SyncRequest("schedule"), source, env.events, env.clock())


# -- ordering --------------------------------------------------------------------------------------


def test_a_branch_moved_back_gets_the_same_answer_with_a_warm_and_a_cold_cache(env: Env) -> None:
    # GIVEN ten commits, c10 live, then the branch moved back to c05
    shas = [env.repo.commit(_dags(2, f"c{i:02d}"), f"c{i:02d}") for i in range(1, 11)]
    env.sync()
    assert env.live_sha() == shas[9]
    twin = Env(env.tmp / "twin")  # the same state on a twin target, through another cache
    twin.sync(url=env.repo.url)
    assert twin.live_sha() == shas[9]
    env.repo.git("reset", "-q", "--hard", shas[4])
    # WHEN one target syncs with its warm cache and the twin with a cold one (a new container)
    shutil.rmtree(twin.cache)
    warm = env.sync()
    cold = twin.sync(url=env.repo.url)
    # THEN both publish the branch's tip (the tip is authoritative), with the same reason
    assert (warm.action, warm.sha) == (cold.action, cold.sha) == ("published", shas[4])
    assert "moved back or rewritten" in warm.reason
    assert warm.reason == cold.reason
    # AND a late trigger for a commit that is neither the tip nor newer is refused by both
    assert env.sync(SyncRequest("webhook", sha=shas[2])).action == "refused"
    shutil.rmtree(twin.cache)
    assert twin.sync(SyncRequest("webhook", sha=shas[2]), url=env.repo.url).action == "refused"


# -- odd names -------------------------------------------------------------------------------------


def _afctl(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    afctl = Path(sys.executable).parent / "afctl"
    base = [str(afctl), "sync", "--repo", env.repo.url, "--target", str(env.target)]
    base += ["--cache-dir", str(env.cache)]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=120, check=False)


def test_a_folder_name_that_is_not_utf8_is_a_clear_refusal_with_an_event(env: Env) -> None:
    good = env.repo.commit(_dags(2, "a"))
    env.sync()
    # GIVEN a commit with a folder named in Latin-1
    folder = os.fsencode(env.repo.path) + b"/dags/caf\xe9"
    os.makedirs(folder)
    with open(folder + b"/dag.py", "wb") as handle:
        handle.write(b"X = 1\n")
    env.repo.git("add", "-A")
    env.repo.git("commit", "-q", "-m", "latin-1 folder")
    # WHEN it is synced THEN it is refused with the name, a "sync failed" event, and current stays
    with pytest.raises(ReleaseValidationError, match=r"dags/caf\\xe9\" is not valid UTF-8"):
        env.sync()
    assert env.events.events[-1][0] == SYNC_FAILED
    assert env.live_sha() == good
    # AND the command line says "refused" and exits 3, no traceback
    out = _afctl(env)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "refused:" in out.stdout
    assert "Traceback" not in out.stderr


def test_a_root_manifest_named_file_is_published_and_symlinks_are_reported(env: Env) -> None:
    (env.repo.path / "dags").mkdir(parents=True)
    os.symlink("../../etc/passwd", env.repo.path / "dags" / "escape.py")
    sha = env.repo.commit({".release-manifest.json": '{"mine": true}\n', "dags/a.py": "A = 1\n"})
    result = env.sync()
    assert (result.action, result.sha) == ("published", sha)
    assert env.live_files() == {".release-manifest.json": '{"mine": true}\n', "dags/a.py": "A = 1\n"}
    assert result.skipped == ("dags/escape.py (symlink)",)
    assert any("dags/escape.py (symlink)" in w for w in result.warnings)
    # the next sync still works (the old manifest name used to break every later sync)
    env.repo.commit({"dags/b.py": "B = 1\n"})
    assert env.sync().action == "published"


def test_an_empty_ref_is_rejected_not_read_as_main(env: Env) -> None:
    env.repo.commit(_dags(1, "a"))
    out = _afctl(env, "--ref", "")
    assert out.returncode == 2
    assert "--ref must name a branch" in out.stderr
    assert not (env.target / "current").exists()


def test_a_404_is_permanent_and_says_so(env: Env) -> None:
    env.repo.commit(_dags(1, "a"))
    with serve_http(env.repo.path) as url, pytest.raises(RepositoryNotFoundError, match="404 Not Found"):
        env.sync(url=url.replace("/repo.git", "/missing.git"))
    assert env.events.events[-1][1]["error"] == "RepositoryNotFoundError"


@pytest.fixture
def trickling_server() -> Iterator[str]:
    """An HTTP server that answers one byte every half second, forever."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\n\r\n"
                )
                while not stop.wait(0.5):
                    try:
                        conn.sendall(b"0")
                    except OSError:
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/repo.git"
    stop.set()
    thread.join(5)
    server.close()


def test_a_trickling_server_cannot_keep_a_sync_past_its_deadline(env: Env, trickling_server: str) -> None:
    settings = SyncSettings(trickling_server, "main", env.target, deadline_s=2.0)
    source = DulwichGitSource(trickling_server, env.cache)
    started = time.monotonic()
    with pytest.raises(SyncDeadlineError, match="deadline"):
        sync_once(settings, SyncRequest("schedule"), source, env.events, env.clock())
    assert time.monotonic() - started < 6
    assert not (env.target / ".dagsync.lock").exists()


# -- retention and DAG runs -------------------------------------------------------------------------


def _sync(env: Env, in_use: object) -> SyncResult:
    settings = SyncSettings(env.repo.url, "main", env.target, keep_releases=1, min_release_age_s=0)
    source = DulwichGitSource(env.repo.url, env.cache)
    return sync_once(settings, SyncRequest("schedule"), source, env.events, env.clock(), in_use)  # type: ignore[arg-type]


def _insert_run(db: PostgresDatabase, run_id: str, state: str, version: str) -> None:
    conn = db.connect()
    try:
        conn.run(
            "INSERT INTO dag_run (dag_id, run_id, run_type, run_after, state, bundle_version, clear_number) "
            "VALUES ('long', :r, 'manual', now(), :s, :v, 0)",
            r=run_id,
            s=state,
            v=version,
        )
    finally:
        conn.close()


def test_retention_never_deletes_a_release_a_queued_or_running_dag_run_uses(
    env: Env, migrated_database_factory: Callable[[str], PostgresDatabase]
) -> None:
    # GIVEN releases a (used by a running run), b (used by a queued run), c (a finished run's)
    db = migrated_database_factory("dagsyncinuse")
    in_use = PostgresReleasesInUse(db.connect)
    a = env.repo.commit(_dags(2, "a"))
    _sync(env, in_use)
    _insert_run(db, "r1", "running", a)
    b = env.repo.commit(_dags(2, "b"))
    _sync(env, in_use)
    _insert_run(db, "r2", "queued", b)
    c = env.repo.commit(_dags(2, "c"))
    _sync(env, in_use)
    _insert_run(db, "r3", "success", c)
    # WHEN two more commits land with keep=1 and no minimum age
    env.repo.commit(_dags(2, "d"))
    _sync(env, in_use)
    e = env.repo.commit(_dags(2, "e"))
    result = _sync(env, in_use)
    # THEN the runs' releases a and b are kept, c and d (no active run) are deleted
    assert set(env.release_ids()) == {a, b, e}
    assert c not in env.release_ids()
    assert result.action == "published"
    # AND their files are intact
    assert (env.target / "releases" / a / "dags" / "d000.py").read_text().startswith("REV = 'a'")


def test_retention_deletes_nothing_when_the_dag_runs_cannot_be_read(env: Env) -> None:
    down = StaticReleasesInUse(error="cannot connect to the metadata database: connection refused")
    env.repo.commit(_dags(2, "a"))
    _sync(env, down)
    env.repo.commit(_dags(2, "b"))
    result = _sync(env, down)
    assert result.deleted_releases == ()
    assert len(env.release_ids()) == 2
    assert any("could not be read" in w for w in result.warnings)


# -- .airflowignore, checked against Airflow's own walk ---------------------------------------------

IGNORE_CASES = {
    "glob": {
        ".airflowignore": "*.j2.py\n/top_only.py\nsub/deep/\n!keep.j2.py\n# a comment\n",
        "a.py": "",
        "x.j2.py": "",
        "keep.j2.py": "",
        "top_only.py": "",
        "sub/top_only.py": "",
        "sub/y.j2.py": "",
        "sub/deep/z.py": "",
        "sub/.airflowignore": "local_*.py\n",
        "sub/local_1.py": "",
        "sub/other.py": "",
        "other/local_2.py": "",
    },
    "regexp": {
        ".airflowignore": "^templates/\n_tmpl\\.py$\n",
        "a.py": "",
        "templates/t.py": "",
        "b_tmpl.py": "",
        "sub/c_tmpl.py": "",
        "sub/.airflowignore": "skip\n",
        "sub/skip_me.py": "",
        "sub/kept.py": "",
    },
}

AIRFLOW_WALK = """
import json, sys
from airflow._shared.module_loading.file_discovery import find_path_from_directory
root, syntax = sys.argv[1:3]
found = [p[len(root) + 1:] for p in find_path_from_directory(root, ".airflowignore", syntax)]
print(json.dumps(sorted(found)))
"""


@pytest.mark.parametrize("syntax", ["glob", "regexp"])
def test_airflowignore_matches_airflows_own_walk(
    tmp_path: Path, syntax: str, airflow_runtime: object
) -> None:
    from airflow_control_plane.dagsync.airflowignore import compile_rules, is_ignored

    files = IGNORE_CASES[syntax]
    root = tmp_path / "tree"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    python = airflow_runtime.python  # type: ignore[attr-defined]
    done = subprocess.run(
        [str(python), "-c", AIRFLOW_WALK, str(root), syntax], capture_output=True, text=True, check=True
    )
    airflow_sees = set(json.loads(done.stdout.strip().splitlines()[-1]))

    def ours(folder: str, rules: list[object]) -> set[str]:
        here = root / folder if folder else root
        ignore = here / ".airflowignore"
        if ignore.is_file():
            rules = [*rules, *compile_rules(ignore.read_text(), folder, syntax)]
        seen = set()
        for entry in sorted(here.iterdir()):
            path = f"{folder}/{entry.name}" if folder else entry.name
            if entry.is_dir():
                if not is_ignored(path, True, rules):  # type: ignore[arg-type]
                    seen |= ours(path, rules)
            elif entry.name != ".airflowignore" and not is_ignored(path, False, rules):  # type: ignore[arg-type]
                seen.add(path)
        return seen

    assert ours("", []) == airflow_sees
    assert len(airflow_sees) < len([f for f in files if not f.endswith(".airflowignore")])
