"""``afctl bench-dagsync``: the DAG sync figures, measured on generated repositories.

For each size (``--sizes 2000,20000,100000``) of a repository served over file:// (or HTTP
with --http): the first sync, a one-file change and a no-change sync, each in a fresh process
(wall time inside the sync, file operations, bytes written, peak RSS of the process), beside
a naive shallow clone + copy measured in the same run; then the push-to-published latency
through the webhook path (signature check, replay store, hand-off to a background sync) on
the smallest size. Repositories are generated with ``git fast-import`` (a benchmark harness,
not the product path), laid out as a large repository usually is: at most 50 entries per
folder (``dags/team_TT/area_AA/group_GG/``). A one-file change costs the entries of the
changed folder and of its parents. File operations count every create, link, symlink,
mkdir and rename the sync makes on the target (each one billed and slow on EFS); for the
naive copy, every file and folder the clone checks out and the copy creates.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import click

from airflow_control_plane.dagsync.events import InMemoryPublisher
from airflow_control_plane.dagsync.git_source import DulwichGitSource
from airflow_control_plane.dagsync.local import system_clock
from airflow_control_plane.dagsync.request import SyncRequest
from airflow_control_plane.dagsync.service import SyncSettings, sync_once
from airflow_control_plane.dagsync.webhook import (
    FileDeliveryStore,
    ThreadDispatcher,
    handle_webhook,
    sign,
)
from airflow_control_plane.errors import ControlPlaneError
from airflow_control_plane.poll import poll_done

DAG_TEMPLATE = '''"""Generated DAG {index}."""
from datetime import datetime

from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG(dag_id="generated_{index:05d}", start_date=datetime(2026, 1, 1), schedule=None, tags=["{rev}"]):
    EmptyOperator(task_id="noop")
'''
BENCH_SECRET = b"bench-webhook-secret"
RUNS = 5
PER_FOLDER = 50  # files per folder, and sub-folders per folder
TEAMS = 20


@dataclass(frozen=True)
class Figure:
    name: str
    wall_s: float
    file_ops: int
    bytes_written: int
    peak_rss_mb: float = 0.0
    files_written: int = 0


def _git(repo: Path, *args: str, stdin: bytes | None = None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid"}
    env |= {"GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}
    done = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, env=env, input=stdin
    )
    return done.stdout.decode().strip()


def dag_path(index: int) -> str:
    """``dags/team_TT/area_AA/group_GG/dag_NNNNNN.py``: 20 teams, at most 50 entries per folder."""
    team, rest = index % TEAMS, index // TEAMS
    group = rest // PER_FOLDER
    area, sub = group // PER_FOLDER, group % PER_FOLDER
    return f"dags/team_{team:02d}/area_{area:02d}/group_{sub:02d}/dag_{index:06d}.py"


def _blob(text: str) -> bytes:
    data = text.encode()
    return b"data %d\n" % len(data) + data + b"\n"


def _fast_import(path: Path, files: dict[str, str], message: str, parent: bool) -> str:
    stream = [b"commit refs/heads/main\n", b"committer bench <bench@example.invalid> 1800000000 +0000\n"]
    stream.append(_blob(message))
    if parent:
        stream.append(b"from refs/heads/main^0\n")
    for name, text in files.items():
        stream.append(b"M 100644 inline " + name.encode() + b"\n" + _blob(text))
    _git(path, "fast-import", "--quiet", stdin=b"".join(stream) + b"\n")
    return _git(path, "rev-parse", "refs/heads/main")


def make_repository(path: Path, files: int) -> str:
    """A bare repository with ``files`` DAG files in one commit (fast-import: seconds at 100k)."""
    path.mkdir(parents=True)
    _git(path, "init", "-q", "--bare", "-b", "main")
    content = {dag_path(i): DAG_TEMPLATE.format(index=i, rev="r0") for i in range(files)}
    return _fast_import(path, content, "initial", parent=False)


def change_one_file(path: Path, rev: str) -> str:
    return _fast_import(
        path, {dag_path(0): DAG_TEMPLATE.format(index=0, rev=rev)}, f"change {rev}", parent=True
    )


def _tree_size(root: Path) -> tuple[int, int]:
    """(files + folders, bytes) under ``root``."""
    count, size = 0, 0
    for dirpath, dirs, names in os.walk(root):
        count += len(dirs) + len(names)
        size += sum(os.path.getsize(os.path.join(dirpath, n)) for n in names)
    return count, size


NAIVE_PROBE = """
import json, os, resource, shutil, subprocess, sys, time
url, clone, dest = sys.argv[1:4]
started = time.monotonic()
subprocess.run(["git", "clone", "-q", "--depth", "1", url, clone], check=True, capture_output=True)
shutil.copytree(clone, dest, ignore=shutil.ignore_patterns(".git"))
wall = time.monotonic() - started
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")]
own = int(hwm[0].split()[1]) if hwm else 0
rss = max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # the git clone's peak
print(json.dumps({"wall": wall, "rss": rss / 1024}))
"""


def naive_clone_and_copy(url: str, workdir: Path) -> Figure:
    """A shallow ``git clone`` and a full copy of its tree: what a simple sync does every time."""
    clone, dest = workdir / f"naive-clone-{uuid.uuid4().hex}", workdir / f"naive-copy-{uuid.uuid4().hex}"
    done = subprocess.run(
        [sys.executable, "-c", NAIVE_PROBE, url, str(clone), str(dest)],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(done.stdout.strip().splitlines()[-1])
    clone_ops, clone_bytes = _tree_size(clone)
    copy_ops, copy_bytes = _tree_size(dest)
    shutil.rmtree(clone)
    shutil.rmtree(dest)
    return Figure(
        "naive clone + copy", data["wall"], clone_ops + copy_ops, clone_bytes + copy_bytes, data["rss"]
    )


# One measured sync, in a fresh process so its peak RSS is its own.
SYNC_PROBE = """
import json, resource, sys, time
from pathlib import Path
from airflow_control_plane.dagsync.events import InMemoryPublisher
from airflow_control_plane.dagsync.git_source import DulwichGitSource
from airflow_control_plane.dagsync.local import system_clock
from airflow_control_plane.dagsync.service import SyncSettings, sync_once
from airflow_control_plane.dagsync.request import SyncRequest
url, target, cache = sys.argv[1:4]
settings = SyncSettings(repository=url, ref="main", target=Path(target), min_release_age_s=0, deadline_s=3600)
started = time.monotonic()
result = sync_once(settings, SyncRequest("manual"), DulwichGitSource(url, Path(cache)), InMemoryPublisher(),
                   system_clock())
wall = time.monotonic() - started
# VmHWM: this process's own peak (ru_maxrss survives exec on Linux and would show the parent's)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")]
rss = int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"action": result.action, "wall": wall, "ops": result.file_ops,
                  "bytes": result.bytes_written, "written": result.files_written, "rss": rss}))
"""


def _timed_sync(settings: SyncSettings, cache: Path, name: str) -> Figure:
    done = subprocess.run(
        [sys.executable, "-c", SYNC_PROBE, settings.repository, str(settings.target), str(cache)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise click.ClickException(f"{name} failed: {done.stderr.strip().splitlines()[-1:]}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return Figure(
        f"{name} [{data['action']}]", data["wall"], data["ops"], data["bytes"], data["rss"], data["written"]
    )


def _median(figures: list[Figure]) -> Figure:
    ordered = sorted(figures, key=lambda f: f.wall_s)
    return ordered[len(ordered) // 2]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None


@contextmanager
def serve_http(repo: Path, token: str | None = None, username: str = "x-access-token") -> Iterator[str]:
    """Serve ``repo`` over Git smart HTTP (dulwich.web) on a free local port.

    With ``token``, every request must carry HTTP Basic auth ``username:token`` (as GitHub
    and GitLab accept a token over HTTPS); otherwise the answer is 401.
    """
    from dulwich.repo import Repo
    from dulwich.server import DictBackend
    from dulwich.web import make_wsgi_chain

    with Repo(str(repo)) as served:
        backend = DictBackend({"/repo.git": served})  # type: ignore[arg-type]
        git_app = make_wsgi_chain(backend)
        app = git_app if token is None else _basic_auth(git_app, username, token)
        server = make_server("127.0.0.1", 0, app, server_class=WSGIServer, handler_class=_QuietHandler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}/repo.git"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)


def _basic_auth(app: Any, username: str, token: str) -> Any:
    expected = "Basic " + base64.b64encode(f"{username}:{token}".encode()).decode()

    def guarded(environ: dict[str, Any], start_response: Any) -> Any:
        if not hmac.compare_digest(environ.get("HTTP_AUTHORIZATION", "").encode(), expected.encode()):
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="git"')])
            return [b"authentication required"]
        return app(environ, start_response)

    return guarded


def webhook_latency(settings: SyncSettings, cache: Path, repo: Path, runs: int) -> list[float]:
    """Commit, deliver a signed push, and time until ``current`` points at the new commit."""
    store = FileDeliveryStore(settings.target / ".webhook-deliveries")
    errors: list[BaseException] = []

    def run(request: SyncRequest) -> None:
        try:
            sync_once(
                settings,
                request,
                DulwichGitSource(settings.repository, cache),
                InMemoryPublisher(),
                system_clock(),
            )
        except ControlPlaneError as exc:
            errors.append(exc)

    latencies = []
    for index in range(runs):
        sha = change_one_file(repo, f"hook{index}")
        body = json.dumps(
            {"ref": "refs/heads/main", "after": sha, "repository": {"full_name": "bench/dags"}}
        ).encode()
        headers = {
            "X-Hub-Signature-256": sign(BENCH_SECRET, body),
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": uuid.uuid4().hex,
        }
        dispatcher = ThreadDispatcher(run)
        started = time.monotonic()
        handle_webhook(
            headers,
            body,
            secret=BENCH_SECRET,
            repository="bench/dags",
            branch="main",
            store=store,
            dispatcher=dispatcher,
            now=time.time(),
        )
        poll_done(partial(_published, settings.target / "current", sha), timeout_s=30, interval_s=0.005)
        latencies.append(time.monotonic() - started)
        dispatcher.join(30)
        if errors:
            raise errors[0]
    return latencies


def _print(size: int, figures: list[Figure]) -> None:
    for fig in figures:
        numbers = f"{fig.wall_s:9.3f} {fig.file_ops:10d} {fig.bytes_written:14d} {fig.peak_rss_mb:9.0f}"
        click.echo(f"{size:>8} {fig.name:32} {numbers}")


HEADER = (
    f"{'files':>8} {'measurement (median of runs)':32} {'wall s':>9} {'file ops':>10} "
    f"{'bytes written':>14} {'peak MB':>9}"
)


@click.command("bench-dagsync")
@click.option("--sizes", default="2000", show_default=True, help="Comma-separated repository sizes (files).")
@click.option(
    "--http", "use_http", is_flag=True, help="Serve the repository over smart HTTP instead of file://."
)
@click.option("--webhook-runs", default=5, show_default=True, type=click.IntRange(min=0))
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None)
def bench_dagsync(sizes: str, use_http: bool, webhook_runs: int, workdir: Path | None) -> None:
    """Measure DAG sync (first sync, one-file change, no change, webhook latency) against a naive copy."""
    try:
        counts = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"--sizes must be comma-separated numbers, got {sizes!r}") from None
    if not counts or min(counts) < 10:
        raise click.BadParameter("--sizes must name sizes of at least 10 files")
    transport = "http" if use_http else "file"
    with tempfile.TemporaryDirectory(prefix="bench-dagsync-", dir=workdir) as tmp, ExitStack() as stack:
        root = Path(tmp)
        benches = []
        for files in counts:
            click.echo(f"generating a repository of {files} DAG files, first sync, naive copy ...")
            repo = root / f"repo-{files}.git"
            make_repository(repo, files)
            url = stack.enter_context(serve_http(repo) if use_http else _file_url(repo))
            bench = _SizeBench(files, root / f"size-{files}", repo, url)
            bench.first_and_naive()
            benches.append(bench)
        # one-file and no-change syncs round-robin over the sizes, so machine load hits all alike
        for run in range(RUNS):
            for bench in benches:
                bench.change(run)
        click.echo(HEADER)
        for bench in benches:
            _print(bench.files, list(bench.figures().values()))
        click.echo(f"transport: {transport}")
        if webhook_runs:
            small = benches[0]
            settings = SyncSettings(
                repository=small.url, ref="main", target=small.target, min_release_age_s=0
            )
            latencies = webhook_latency(settings, small.cache, small.repo, webhook_runs)
            median, worst = statistics.median(latencies), max(latencies)
            click.echo(
                f"push-to-published via the webhook path ({small.files} files): median {median:.3f} s, "
                f"max {worst:.3f} s over {len(latencies)} pushes"
            )
        _goals({b.files: b.figures() for b in benches})


@contextmanager
def _file_url(repo: Path) -> Iterator[str]:
    yield f"file://{repo}"


class _SizeBench:
    """One repository size: its target, cache and measurements."""

    def __init__(self, files: int, root: Path, repo: Path, url: str) -> None:
        root.mkdir()
        self.files, self.root, self.repo, self.url = files, root, repo, url
        self.target, self.cache = root / "target", root / "cache"
        self.settings = SyncSettings(repository=url, ref="main", target=self.target, min_release_age_s=0)
        self.ones: list[Figure] = []
        self.noops: list[Figure] = []

    def first_and_naive(self) -> None:
        self.first = _timed_sync(self.settings, self.cache, "first sync")
        self.naive = naive_clone_and_copy(self.url, self.root)

    def change(self, run: int) -> None:
        change_one_file(self.repo, f"r{run + 1}")
        self.ones.append(_timed_sync(self.settings, self.cache, "one-file change"))
        self.noops.append(_timed_sync(self.settings, self.cache, "no-change sync"))

    def figures(self) -> dict[str, Figure]:
        return {
            "first": self.first,
            "one": _median(self.ones),
            "noop": _median(self.noops),
            "naive": self.naive,
        }


def _goals(results: dict[int, dict[str, Figure]]) -> None:
    sizes = sorted(results)
    small, large = results[sizes[0]], results[sizes[-1]]
    one_small, one_large = small["one"], large["one"]
    ratio = one_large.wall_s / one_small.wall_s if one_small.wall_s else float("inf")
    written = [results[n]["one"].files_written for n in sizes]
    ops = [results[n]["one"].file_ops for n in sizes]
    speedups = [round(results[n]["naive"].wall_s / max(results[n]["one"].wall_s, 1e-9), 1) for n in sizes]
    goals = [
        (
            f"one-file change at {sizes[-1]} files within 2x of {sizes[0]} ({ratio:.2f}x)",
            ratio <= 2,
        ),
        (
            f"one-file change writes one file at every size ({written})",
            all(results[n]["one"].files_written == 1 for n in sizes),
        ),
        (
            f"one-file change file ops {ops} and bytes "
            f"{[results[n]['one'].bytes_written for n in sizes]}: not proportional to the files "
            f"(x{sizes[-1] / sizes[0]:.0f} files -> x{one_large.file_ops / max(one_small.file_ops, 1):.1f})",
            one_large.file_ops <= 4 * one_small.file_ops,
        ),
        (
            f"one-file change >= 10x faster than naive at every size ({speedups})",
            all(results[n]["naive"].wall_s >= 10 * results[n]["one"].wall_s for n in sizes),
        ),
    ]
    for text, ok in goals:
        click.echo(f"  [{'PASS' if ok else 'FAIL'}] {text}")


COMMANDS: list[click.Command] = [bench_dagsync]


def _published(current: Path, sha: str) -> bool:
    return os.readlink(current).split("/")[-1] == sha
