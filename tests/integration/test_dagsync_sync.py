"""DAG sync end to end: real Git repositories (file:// and smart HTTP with a token), real folders."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from airflow_control_plane.commands.bench_dagsync import serve_http
from airflow_control_plane.dagsync.credentials import GitCredentials
from airflow_control_plane.dagsync.errors import (
    GitAuthenticationError,
    RefNotFoundError,
    ReleaseValidationError,
    RemoteUnavailableError,
    RepositoryNotFoundError,
)
from airflow_control_plane.dagsync.events import RELEASE_PUBLISHED, SYNC_FAILED, InMemoryPublisher
from airflow_control_plane.dagsync.git_source import DulwichGitSource
from airflow_control_plane.dagsync.request import SyncRequest
from airflow_control_plane.dagsync.service import Clock, SyncResult, SyncSettings, sync_once

pytestmark = pytest.mark.integration

TOKEN = "ghp_test_token_value_123"


class GitRepo:
    """A real repository driven with the git binary (tests only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid"}
        env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
        done = subprocess.run(["git", "-C", str(self.path), *args], check=True, capture_output=True, env=env)
        return done.stdout.decode().strip()

    def commit(self, files: dict[str, str | None], message: str = "change") -> str:
        for name, text in files.items():
            path = self.path / name
            if text is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    @property
    def url(self) -> str:
        return f"file://{self.path}"


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.repo = GitRepo(tmp / "origin")
        self.target = tmp / "dags"
        self.cache = tmp / "cache"
        self.events = InMemoryPublisher()
        self._t = 1_800_000_000.0

    def clock(self) -> Clock:
        def now() -> float:
            self._t += 1.0
            return self._t

        return Clock(now=now, monotonic=time.monotonic, new_id=lambda: uuid.uuid4().hex)

    def sync(
        self,
        request: SyncRequest | None = None,
        *,
        url: str | None = None,
        ref: str = "main",
        subdir: str = "",
        credentials: GitCredentials | None = None,
        keep: int = 5,
        min_age_s: float = 3600.0,
    ) -> SyncResult:
        settings = SyncSettings(
            url or self.repo.url,
            ref,
            self.target,
            subdir=subdir,
            keep_releases=keep,
            min_release_age_s=min_age_s,
        )
        source = DulwichGitSource(settings.repository, self.cache, credentials)
        return sync_once(settings, request or SyncRequest("schedule"), source, self.events, self.clock())

    def live_manifest(self) -> dict[str, object]:
        release_id = os.readlink(self.target / "current").split("/")[-1]
        data = json.loads((self.target / "releases" / f"{release_id}.json").read_text())
        assert isinstance(data, dict)
        return data

    def release_ids(self) -> list[str]:
        return sorted(p.name for p in (self.target / "releases").iterdir() if not p.name.endswith(".json"))

    def live_sha(self) -> str | None:
        if not (self.target / "current").is_symlink():
            return None
        return str(self.live_manifest()["sha"])

    def live_files(self) -> dict[str, str]:
        root = (self.target / "current").resolve()
        out = {}
        for dirpath, _dirs, names in os.walk(root, followlinks=True):  # as Airflow walks
            for name in names:
                path = Path(dirpath) / name
                out[str(path.relative_to(root))] = path.read_text()
        return out


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def _dags(count: int, rev: str) -> dict[str, str | None]:
    return {f"dags/d{i:03d}.py": f"REV = {rev!r}\nINDEX = {i}\n" for i in range(count)}


def test_initial_incremental_and_noop_syncs(env: Env) -> None:
    # GIVEN a repository with 50 DAG files
    first = env.repo.commit({**_dags(50, "one"), "README.md": "docs\n"})
    # WHEN it is synced for the first time
    initial = env.sync()
    # THEN every file is written and `current` points at the commit's release
    assert (initial.action, initial.sha, initial.files_written) == ("published", first, 51)
    assert os.readlink(env.target / "current") == f"releases/{first}"
    assert env.live_files()["dags/d007.py"] == "REV = 'one'\nINDEX = 7\n"

    # WHEN one file changes, one is added and one removed
    second = env.repo.commit(
        {"dags/d001.py": "REV = 'two'\n", "dags/new.py": "X = 1\n", "dags/d002.py": None}
    )
    incremental = env.sync()
    # THEN only the changed and new files are written; the rest are hard links to the old release
    assert (incremental.action, incremental.sha) == ("published", second)
    assert (incremental.files_written, incremental.files_removed, incremental.files_linked) == (2, 1, 49)
    old = env.target / "releases" / first / "dags" / "d010.py"
    new = env.target / "releases" / second / "dags" / "d010.py"
    assert old.stat().st_ino == new.stat().st_ino
    assert "dags/d002.py" not in env.live_files()
    # AND the manifest records what was published
    manifest = env.live_manifest()
    assert manifest["sha"] == second
    assert manifest["files_written"] == 2

    # WHEN the live commit is synced again
    started = time.monotonic()
    noop = env.sync()
    # THEN nothing is written and it is fast
    assert noop.action == "noop"
    assert noop.files_written == 0
    assert time.monotonic() - started < 2.0  # generous bound on a shared CPU; the bench measures it
    published = [d for t, d in env.events.events if t == RELEASE_PUBLISHED]
    assert [d["sha"] for d in published] == [first, second]
    assert published[1]["files_changed"] == 3


def test_a_subdirectory_is_published_alone(env: Env) -> None:
    env.repo.commit({"airflow/dags/a.py": "A = 1\n", "app/server.py": "S = 1\n"})
    result = env.sync(subdir="airflow/dags")
    assert result.action == "published"
    assert env.live_files() == {"a.py": "A = 1\n"}


def test_a_broken_commit_is_not_published_and_names_file_and_line(env: Env) -> None:
    good = env.repo.commit(_dags(5, "good"))
    env.sync()
    # GIVEN a commit whose DAG has a syntax error on line 3
    env.repo.commit({"dags/d003.py": "import os\n\ndef broken(:\n    pass\n"})
    # WHEN it is synced
    with pytest.raises(ReleaseValidationError) as info:
        env.sync()
    # THEN the error names the file and line, `current` is untouched, nothing half-built stays
    assert "dags/d003.py:3:" in str(info.value)
    assert env.live_sha() == good
    assert env.release_ids() == [good]
    assert env.events.events[-1][0] == SYNC_FAILED
    assert "dags/d003.py:3" in env.events.events[-1][1]["reason"]


def test_an_unknown_ref_is_a_clear_error_and_publishes_nothing(env: Env) -> None:
    env.repo.commit(_dags(2, "x"))
    with pytest.raises(RefNotFoundError, match="'mian' does not exist"):
        env.sync(ref="mian")
    assert not (env.target / "current").exists()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_remote_is_a_transient_error(env: Env) -> None:
    with pytest.raises(RemoteUnavailableError, match="cannot fetch from"):
        env.sync(url=f"http://127.0.0.1:{_closed_port()}/r.git")
    assert not (env.target / "current").exists()


def test_a_missing_repository_is_permanent_and_says_why(env: Env) -> None:
    # GIVEN a path that holds no repository (a 404 over HTTP is the same case, tested with HTTP)
    # WHEN it is synced THEN the error is permanent (not retried as transient) and not empty
    with pytest.raises(RepositoryNotFoundError, match=r"no-such-repo.*retrying will not help"):
        env.sync(url=f"file://{env.tmp}/no-such-repo")
    assert not (env.target / "current").exists()
    assert env.events.events[-1][1]["error"] == "RepositoryNotFoundError"


def test_http_with_a_token_syncs_and_a_bad_token_is_rejected_without_leaking(env: Env) -> None:
    sha = env.repo.commit(_dags(3, "http"))
    with serve_http(env.repo.path, token=TOKEN) as url:
        # WHEN the wrong token is used
        with pytest.raises(GitAuthenticationError) as info:
            env.sync(url=url, credentials=GitCredentials("x-access-token", "wrong-" + TOKEN))
        # THEN nothing is published and the secret appears nowhere
        assert not (env.target / "current").exists()
        assert TOKEN not in str(info.value)
        assert TOKEN not in json.dumps(env.events.events)
        # WHEN the right token is used THEN the commit is published
        result = env.sync(url=url, credentials=GitCredentials("x-access-token", TOKEN))
    assert (result.action, result.sha) == ("published", sha)
    assert TOKEN not in json.dumps(env.events.events)
    assert TOKEN not in json.dumps(env.live_manifest())


def test_out_of_order_triggers_never_replace_a_newer_commit(env: Env) -> None:
    # GIVEN two pushes A then B, whose webhooks arrive B first
    a = env.repo.commit(_dags(3, "a"))
    b = env.repo.commit(_dags(3, "b"))
    assert env.sync(SyncRequest("webhook", sha=b)).sha == b
    # WHEN A's late trigger arrives
    late = env.sync(SyncRequest("webhook", sha=a))
    # THEN it is refused and B stays live
    assert late.action == "refused"
    assert "nor newer than live" in late.reason
    assert env.live_sha() == b


def test_rollback_to_an_older_sha_holds_until_a_new_commit(env: Env) -> None:
    a = env.repo.commit(_dags(3, "a"))
    env.sync()
    b = env.repo.commit(_dags(3, "b"))
    env.sync()
    # WHEN an operator rolls back to A
    rollback = env.sync(SyncRequest("manual", rollback_to=a))
    # THEN A is live again (its release was still on the target: a switch only)
    assert (rollback.action, env.live_sha()) == ("published", a)
    assert env.live_files()["dags/d000.py"].startswith("REV = 'a'")
    # AND the schedule does not undo it while the branch still points at B
    assert env.sync().action == "noop"
    assert env.live_sha() == a
    # WHEN a new commit lands THEN it is published
    c = env.repo.commit(_dags(3, "c"))
    assert env.sync().sha == c
    assert env.live_sha() == c
    assert b != c


def test_rollback_rebuilds_a_release_that_retention_deleted(env: Env) -> None:
    a = env.repo.commit(_dags(3, "a"))
    env.sync(keep=1, min_age_s=0)
    env.repo.commit(_dags(3, "b"))
    result = env.sync(keep=1, min_age_s=0)
    assert result.deleted_releases == (a,)
    assert not (env.target / "releases" / a).exists()
    # WHEN rolling back to the deleted release
    rollback = env.sync(SyncRequest("manual", rollback_to=a), keep=1, min_age_s=0)
    # THEN it is rebuilt from Git and published
    assert (rollback.action, env.live_sha()) == ("published", a)
    assert env.live_files()["dags/d001.py"].startswith("REV = 'a'")


def test_retention_keeps_young_releases_and_cleans_interrupted_leftovers(env: Env) -> None:
    env.repo.commit(_dags(2, "a"))
    env.sync()
    # GIVEN leftovers of an interrupted sync
    (env.target / "releases" / ".tmp-deadbeef-1").mkdir()
    (env.target / "releases" / ".tmp-deadbeef-1" / "half.py").write_text("x")
    os.symlink("releases/nowhere", env.target / ".current.tmp-1")
    env.repo.commit(_dags(2, "b"))
    # WHEN the next sync runs with keep=1 but a one-hour minimum age
    result = env.sync(keep=1, min_age_s=3600)
    # THEN the leftovers are gone and the young previous release is kept
    assert set(result.cleaned_leftovers) == {"releases/.tmp-deadbeef-1", ".current.tmp-1"}
    assert result.deleted_releases == ()
    assert len(env.release_ids()) == 2


def test_tags_and_full_shas_are_refs_too(env: Env) -> None:
    a = env.repo.commit(_dags(2, "a"))
    env.repo.git("tag", "-a", "v1", "-m", "release 1")
    env.repo.commit(_dags(2, "b"))
    assert env.sync(ref="v1").sha == a
    other = Env(env.tmp / "second")
    assert other.sync(url=env.repo.url, ref=a).sha == a


def test_concurrent_syncs_publish_once_and_leave_a_consistent_target(env: Env) -> None:
    # GIVEN four syncs of the same commit started at the same time in separate processes
    sha = env.repo.commit(_dags(40, "c"))
    afctl = Path(sys.executable).parent / "afctl"
    command = [str(afctl), "sync", "--repo", env.repo.url, "--target", str(env.target)]
    procs = [
        subprocess.Popen(
            [*command, "--cache-dir", str(env.tmp / f"cache{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    # THEN each either published, found it already live, or was told another sync holds the lock
    published = 0
    for proc, (out, err) in zip(procs, outputs, strict=True):
        text = (out + err).decode()
        assert proc.returncode in (0, 2), text
        if proc.returncode == 2:
            assert "another sync" in text, text
        published += text.startswith("published")
    assert published == 1
    assert env.live_sha() == sha
    assert not (env.target / ".dagsync.lock").exists()
    assert env.release_ids() == [sha]


def test_the_cli_explains_what_it_did_and_exits_3_on_refusal(env: Env) -> None:
    a = env.repo.commit(_dags(2, "a"))
    b = env.repo.commit(_dags(2, "b"))
    afctl = Path(sys.executable).parent / "afctl"
    base = [
        str(afctl),
        "sync",
        "--repo",
        env.repo.url,
        "--target",
        str(env.target),
        "--cache-dir",
        str(env.cache),
    ]
    first = subprocess.run(base, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"published: no release is live yet: publishing {b[:12]}")
    assert "2 file(s) written" in first.stdout
    refused = subprocess.run([*base, "--sha", a], capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 3
    assert "refused:" in refused.stdout
    bad = subprocess.run([*base, "--ref", "nope"], capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2
    assert "error: ref 'nope' does not exist" in bad.stderr


def test_unchanged_directories_are_shared_and_every_directory_is_distinct_for_airflow(env: Env) -> None:
    # GIVEN two teams' folders, and two identical packages (same Git tree id at two paths)
    env.repo.commit(
        {
            **{f"team_a/a{i}.py": f"A = {i}\n" for i in range(20)},
            **{f"team_b/b{i}.py": f"B = {i}\n" for i in range(20)},
            "pkg_one/__init__.py": "",
            "pkg_two/__init__.py": "",
        }
    )
    env.sync()
    first_root = os.path.realpath(env.target / "current" / "team_b")
    # WHEN only team_a changes
    second = env.repo.commit({"team_a/a0.py": "A = 'changed'\n"})
    result = env.sync()
    # THEN one file is written, team_a's other files are linked, team_b is reused whole (one symlink)
    assert (result.files_written, result.files_linked) == (1, 19)
    manifest = env.live_manifest()
    assert manifest["sha"] == second
    assert manifest["dirs_reused"] == 3  # team_b, pkg_one, pkg_two
    assert (manifest["dirs_created"], result.dirs_created) == (2, 2)  # team_a and the root
    current = env.target / "current"
    assert os.path.realpath(current / "team_b") == first_root
    # AND identical packages are separate real directories, so a walk that follows links (as
    # Airflow's does, rejecting a directory seen twice) meets each directory once
    resolved = [os.path.realpath(d) for d, _s, _f in os.walk(current, followlinks=True)]
    assert len(resolved) == len(set(resolved))
    assert os.path.realpath(current / "pkg_one") != os.path.realpath(current / "pkg_two")


def test_retention_removes_shared_directories_no_release_uses(env: Env) -> None:
    env.repo.commit({"team/a.py": "A = 1\n"})
    env.sync(keep=1, min_age_s=0)
    first_tree = {p.name for p in (env.target / "trees").iterdir()}
    env.repo.commit({"team/a.py": "A = 2\n"})
    env.sync(keep=1, min_age_s=0)
    # THEN the old release's directory went with it, the live one stays
    remaining = {p.name for p in (env.target / "trees").iterdir()}
    assert remaining.isdisjoint(first_tree)
    assert env.live_files() == {"team/a.py": "A = 2\n"}


def test_rollback_works_while_the_remote_is_unreachable(env: Env) -> None:
    # GIVEN two published commits, then the remote goes away
    a = env.repo.commit(_dags(2, "a"))
    env.sync()
    env.repo.commit(_dags(2, "b"))
    env.sync()
    env.repo.path.rename(env.tmp / "origin-moved")
    # WHEN an operator rolls back to A, whose release is still on the target
    result = env.sync(SyncRequest("manual", rollback_to=a))
    # THEN the rollback is a switch that needs no remote; an ordinary sync reports the outage
    assert (result.action, env.live_sha()) == ("published", a)
    with pytest.raises(RepositoryNotFoundError):
        env.sync()
    assert env.live_sha() == a
