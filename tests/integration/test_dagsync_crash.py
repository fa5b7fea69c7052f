"""Crash consistency: SIGKILL the sync at random instants while a reader checks `current` in a loop.

Every commit rewrites every file with its revision number and removes a few files, so a
partial tree (missing or extra files) or a mix of two commits (two revisions) is detectable.
The reader resolves `current` once per pass (as a DAG parse does) and reads that release.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

FILES = 150
COMMITS = 5
ITERATIONS = 30
LOCK_TTL_S = 0.5

SYNC_SCRIPT = """
import sys, time, uuid
from pathlib import Path
from airflow_control_plane.dagsync.events import InMemoryPublisher
from airflow_control_plane.dagsync.git_source import DulwichGitSource
from airflow_control_plane.dagsync.service import Clock, SyncSettings, sync_once
from airflow_control_plane.dagsync.webhook import SyncRequest
url, target, cache, sha, ttl = sys.argv[1:6]
settings = SyncSettings(url, "main", Path(target), keep_releases=2, min_release_age_s=3600,
                        lock_ttl_s=float(ttl))
clock = Clock(time.time, time.monotonic, lambda: uuid.uuid4().hex)
print("ready", flush=True)
result = sync_once(settings, SyncRequest("manual", rollback_to=sha), DulwichGitSource(url, Path(cache)),
                   InMemoryPublisher(), clock)
print(result.action)
"""


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x.invalid"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x.invalid"}
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, env=env
    ).stdout.decode()


def _make_history(repo: Path) -> dict[str, tuple[int, frozenset[str]]]:
    """Commits whose every file says its revision; revision r has FILES - 3r files."""
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    expected = {}
    for rev in range(COMMITS):
        names = {f"dags/g{i % 7}/d{i:04d}.py" for i in range(FILES - 3 * rev)}
        for old in (repo / "dags").rglob("*.py") if (repo / "dags").exists() else []:
            if str(old.relative_to(repo)) not in names:
                old.unlink()
        for name in names:
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).write_text(f"REV = {rev}\n" + "# padding\n" * 20)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", f"rev {rev}")
        expected[_git(repo, "rev-parse", "HEAD").strip()] = (rev, frozenset(names))
    return expected


class Reader(threading.Thread):
    def __init__(self, target: Path, expected: dict[str, tuple[int, frozenset[str]]]) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.expected = expected
        self.stop = threading.Event()
        self.passes = 0
        self.violations: list[str] = []
        self.seen: set[str] = set()

    def run(self) -> None:
        while not self.stop.is_set():
            self.check_once()
            time.sleep(0.002)  # leave CPU to the syncs being killed

    def check_once(self) -> None:
        try:
            root = Path(os.path.realpath(self.target / "current"))
        except OSError:
            return
        if not (self.target / "current").is_symlink():
            return  # before the first publish
        manifest = json.loads((root / ".release-manifest.json").read_text())
        rev, names = self.expected[manifest["sha"]]
        found = set()
        for dirpath, _dirs, files in os.walk(root, followlinks=True):  # as Airflow walks
            for name in files:
                if name == ".release-manifest.json":
                    continue
                path = Path(dirpath) / name
                found.add(str(path.relative_to(root)))
                if not path.read_text().startswith(f"REV = {rev}\n"):
                    self.violations.append(f"{path} is not revision {rev}")
        if found != names:
            self.violations.append(f"{root.name}: {len(found)} files, expected {len(names)}")
        self.seen.add(manifest["sha"])
        self.passes += 1


def test_sigkill_at_random_instants_never_exposes_a_partial_or_mixed_tree(tmp_path: Path) -> None:
    # GIVEN a history of commits and a first complete publish
    expected = _make_history(tmp_path / "origin")
    shas = list(expected)
    url, target, cache = f"file://{tmp_path / 'origin'}", tmp_path / "dags", tmp_path / "cache"

    def start(sha: str) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-c", SYNC_SCRIPT, url, str(target), str(cache), sha, str(LOCK_TTL_S)]
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    first = start(shas[0])
    assert first.stdout is not None
    assert first.stdout.readline() == b"ready\n"
    began = time.monotonic()
    _out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err.decode()
    # every commit rewrites every file, so one full sync's duration is the window kills must hit
    window_s = (time.monotonic() - began) * 1.1
    reader = Reader(target, expected)
    reader.start()
    rng = random.Random(20261121)
    killed = 0
    try:
        # WHEN syncs to varying commits are killed with SIGKILL at random instants, many times
        for iteration in range(ITERATIONS):
            proc = start(shas[(iteration + 1) % COMMITS])
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"ready\n"  # imports done: the sync itself starts now
            time.sleep(rng.uniform(0.0, window_s))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed += 1
            proc.wait(timeout=60)
            proc.communicate(timeout=60)
            time.sleep(LOCK_TTL_S + 0.05)  # let the dead holder's lock expire
        # AND a last sync runs to completion
        final = start(shas[-1])
        _out, err = final.communicate(timeout=120)
        assert final.returncode == 0, err.decode()
    finally:
        reader.stop.set()
        reader.join(timeout=60)
    print(f"killed={killed} passes={reader.passes} seen={len(reader.seen)} window={window_s:.3f}s")
    # THEN the reader never saw a partial or mixed tree, and checked many times across commits
    assert reader.violations == []
    assert killed >= 5, "too few kills landed mid-sync to mean anything"
    assert reader.passes > ITERATIONS
    assert len(reader.seen) >= 2
    # AND the final sync cleaned every leftover and `current` names the last commit
    assert os.readlink(target / "current") == f"releases/{shas[-1]}"
    leftovers = [p.name for p in (target / "releases").iterdir() if p.name.startswith(".")]
    leftovers += [p.name for p in target.iterdir() if p.name.startswith(".current.tmp")]
    assert leftovers == []
    reader.check_once()
    assert reader.violations == []
