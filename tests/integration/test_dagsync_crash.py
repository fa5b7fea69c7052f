"""Crash loop: kill the sync (SIGKILL or SIGTERM) at random instants while a reader checks every
tree it sees, and require the very next sync to succeed on its first try.

Every commit rewrites every file with its revision number and removes a few files, so a
partial tree (missing or extra files) or a mix of two commits (two revisions) is detectable.
The reader resolves `current` once per pass (as a DAG parse does) and reads that release.
New commits land during the loop, so kills also hit fetches into the Git cache; the lease
has its production TTL (60 s), so a sync that succeeds right after a kill did not wait for
an expiry: it proved the holder dead.
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

from airflow_control_plane.dagsync.release import folder_keys
from tests.harness import GitRepo

pytestmark = pytest.mark.integration

FILES = 120
ITERATIONS = 28

SYNC_SCRIPT = """
import signal, sys, time, uuid
from pathlib import Path
from airflow_control_plane.dagsync.events import InMemoryPublisher
from airflow_control_plane.dagsync.git_source import DulwichGitSource
from airflow_control_plane.dagsync.service import Clock, SyncSettings, sync_once
from airflow_control_plane.dagsync.request import SyncRequest
url, target, cache, sha = sys.argv[1:5]
settings = SyncSettings(url, "main", Path(target), keep_releases=2, min_release_age_s=0)
clock = Clock(time.time, time.monotonic, lambda: uuid.uuid4().hex)
request = SyncRequest("manual", rollback_to=sha) if sha != "tip" else SyncRequest("schedule")
def stop(signum, frame):  # as `afctl sync` does: SIGTERM unwinds and releases the lease
    raise SystemExit(128 + signum)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
result = sync_once(settings, request, DulwichGitSource(url, Path(cache)), InMemoryPublisher(), clock)
print(result.action, flush=True)
"""


def _commit(repo: Path, rev: int) -> tuple[str, frozenset[str]]:
    """A commit whose every file says ``rev``; it has FILES - 3 * (rev % 5) files."""
    names = {f"dags/g{i % 7}/d{i:04d}.py" for i in range(FILES - 3 * (rev % 5))}
    for old in (repo / "dags").rglob("*.py") if (repo / "dags").exists() else []:
        if str(old.relative_to(repo)) not in names:
            old.unlink()
    for name in names:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(f"REV = {rev}\n" + "# padding\n" * 20)
    GitRepo(repo).git("add", "-A")
    GitRepo(repo).git("commit", "-q", "-m", f"rev {rev}")
    return GitRepo(repo).git("rev-parse", "HEAD").strip(), frozenset(names)


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
            release_id = os.readlink(self.target / "current").split("/")[-1]
        except FileNotFoundError:
            return  # before the first publish
        root = self.target / "releases" / release_id
        manifest = json.loads((self.target / "releases" / f"{release_id}.json").read_text())
        rev, names = self.expected[manifest["sha"]]
        found = set()
        for dirpath, _dirs, files in os.walk(root, followlinks=True):  # as Airflow walks
            for name in files:
                path = Path(dirpath) / name
                found.add(str(path.relative_to(root)))
                if not path.read_text().startswith(f"REV = {rev}\n"):
                    self.violations.append(f"{path} is not revision {rev}")
        if found != names:
            self.violations.append(f"{release_id}: {len(found)} files, expected {len(names)}")
        self.seen.add(manifest["sha"])
        self.passes += 1


def test_random_kills_never_expose_a_partial_tree_and_the_next_sync_always_succeeds(tmp_path: Path) -> None:
    # GIVEN a repository, and a first complete publish
    origin = tmp_path / "origin"
    origin.mkdir()
    GitRepo(origin).git("init", "-q", "-b", "main")
    expected: dict[str, tuple[int, frozenset[str]]] = {}
    sha, names = _commit(origin, 0)
    expected[sha] = (0, names)
    url, target, cache = f"file://{origin}", tmp_path / "dags", tmp_path / "cache"

    def start(what: str) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-c", SYNC_SCRIPT, url, str(target), str(cache), what]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"  # imports done: the sync itself starts now
        return proc

    first = start("tip")
    began = time.monotonic()
    _out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err.decode()
    window_s = (time.monotonic() - began) * 1.1  # every commit rewrites every file
    reader = Reader(target, expected)
    reader.start()
    rng = random.Random(20261130)
    kills = {signal.SIGKILL: 0, signal.SIGTERM: 0}
    completed = 0
    try:
        # WHEN syncs of new commits and of rollbacks are killed at random instants, back to back
        for iteration in range(ITERATIONS):
            if rng.random() < 0.7:
                sha, names = _commit(origin, iteration + 1)
                expected[sha] = (iteration + 1, names)
                what = "tip"
            else:
                what = rng.choice(list(expected))
            proc = start(what)
            time.sleep(rng.uniform(0.0, 2 * window_s))  # about half the syncs are killed
            if proc.poll() is None:
                sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
                proc.send_signal(sig)
                kills[sig] += 1
                proc.communicate(timeout=60)
                continue
            out, err = proc.communicate(timeout=60)
            # THEN a sync that was not killed succeeded, though the one before it may have been
            assert proc.returncode == 0, f"iteration {iteration}: {out.decode()} {err.decode()}"
            completed += 1
        # AND the sync right after the last kill succeeds on its first try. A new commit first:
        # a rollback that completed in the last iteration holds while the tip is unchanged, so
        # without it the release the final sync keeps would depend on which syncs were killed.
        sha, names = _commit(origin, ITERATIONS + 1)
        expected[sha] = (ITERATIONS + 1, names)
        final = start("tip")
        out, err = final.communicate(timeout=120)
        assert final.returncode == 0, err.decode()
    finally:
        reader.stop.set()
        reader.join(timeout=60)
    print(f"kills={kills} completed={completed} passes={reader.passes} seen={len(reader.seen)}")
    # THEN the reader never saw a partial or mixed tree, across many commits
    assert reader.violations == []
    assert sum(kills.values()) >= 8, "too few kills landed mid-sync to mean anything"
    assert kills[signal.SIGKILL] >= 2
    assert kills[signal.SIGTERM] >= 2
    assert completed >= 4, "too few syncs ran to completion after a kill"
    assert reader.passes > ITERATIONS
    assert len(reader.seen) >= 3
    # AND nothing an interrupted sync left remains: no temporary entries, no lease, and every
    # stored folder belongs to a release
    assert os.readlink(target / "current") == f"releases/{sha}"
    leftovers = [p.name for d in (target, target / "releases", target / "trees") for p in d.iterdir()]
    assert [n for n in leftovers if n.startswith((".tmp-", ".trash-", ".pending-", ".current.tmp"))] == []
    assert not (target / ".dagsync.lock").exists()
    releases = [p for p in (target / "releases").iterdir() if p.suffix != ".json"]
    roots = [json.loads(Path(f"{p}.json").read_text())["root_key"] for p in releases]
    reachable = {k for root in roots for k in folder_keys(target / "trees", root)}
    stored = {p.name.removesuffix(".json") for p in (target / "trees").iterdir()}
    assert stored == reachable
    reader.check_once()
    assert reader.violations == []
