"""``afctl bench-dagsync``: the DAG sync figures, measured on a generated repository.

Prints, for a repository of N DAG files served over file:// (or HTTP with --http): the initial
sync, a one-file change and a no-change sync (wall time, files written, bytes written), beside
a naive full clone + copy measured in the same run, and the push-to-published latency through
the webhook path (signature check, replay store, hand-off to a background sync). The repository
is created with the ``git`` binary (a benchmark harness, not the product path) and the naive
baseline uses ``git clone``.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import click

from airflow_control_plane.dagsync.events import InMemoryPublisher
from airflow_control_plane.dagsync.git_source import DulwichGitSource
from airflow_control_plane.dagsync.local import system_clock
from airflow_control_plane.dagsync.service import SyncResult, SyncSettings, sync_once
from airflow_control_plane.dagsync.webhook import (
    FileDeliveryStore,
    SyncRequest,
    ThreadDispatcher,
    handle_webhook,
    sign,
)
from airflow_control_plane.errors import ControlPlaneError

DAG_TEMPLATE = '''"""Generated DAG {index}."""
from datetime import datetime

from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG(dag_id="generated_{index:05d}", start_date=datetime(2026, 1, 1), schedule=None, tags=["{rev}"]):
    EmptyOperator(task_id="noop")
'''
BENCH_SECRET = b"bench-webhook-secret"
RUNS = 3


@dataclass(frozen=True)
class Figure:
    name: str
    wall_s: float
    files_written: int
    bytes_written: int
    other_ops: int = 0  # hard links, folders created (each one filesystem operation on EFS)


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid"}
    env |= {"GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}
    done = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    )
    return done.stdout.strip()


def make_repository(path: Path, files: int) -> str:
    path.mkdir(parents=True)
    _git(path, "init", "-q", "-b", "main")
    for index in range(files):
        sub = path / "dags" / f"team_{index % 20:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"dag_{index:05d}.py").write_text(DAG_TEMPLATE.format(index=index, rev="r0"))
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "-m", "initial")
    return _git(path, "rev-parse", "HEAD")


def change_one_file(path: Path, rev: str) -> str:
    (path / "dags" / "team_00" / "dag_00000.py").write_text(DAG_TEMPLATE.format(index=0, rev=rev))
    _git(path, "commit", "-q", "-am", f"change {rev}")
    return _git(path, "rev-parse", "HEAD")


def naive_clone_and_copy(url: str, workdir: Path) -> Figure:
    clone, dest = workdir / f"naive-clone-{uuid.uuid4().hex}", workdir / f"naive-copy-{uuid.uuid4().hex}"
    started = time.monotonic()
    subprocess.run(["git", "clone", "-q", "--depth", "1", url, str(clone)], check=True, capture_output=True)
    shutil.copytree(clone, dest, ignore=shutil.ignore_patterns(".git"))
    wall = time.monotonic() - started
    count, size = 0, 0
    for root, _dirs, names in os.walk(dest):
        for name in names:
            count += 1
            size += os.path.getsize(os.path.join(root, name))
    return Figure("naive clone + copy", wall, count, size)


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


def _timed_sync(settings: SyncSettings, cache: Path, name: str, request: SyncRequest | None = None) -> Figure:
    source = DulwichGitSource(settings.repository, cache)
    started = time.monotonic()
    result: SyncResult = sync_once(
        settings, request or SyncRequest("manual"), source, InMemoryPublisher(), system_clock()
    )
    wall = time.monotonic() - started
    ops = result.files_linked + result.dirs_created
    return Figure(f"{name} [{result.action}]", wall, result.files_written, result.bytes_written, ops)


def _median(figures: list[Figure]) -> Figure:
    ordered = sorted(figures, key=lambda f: f.wall_s)
    return ordered[len(ordered) // 2]


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
        deadline = started + 30
        while os.readlink(settings.target / "current").split("/")[-1] != sha and time.monotonic() < deadline:
            time.sleep(0.005)
        latencies.append(time.monotonic() - started)
        dispatcher.join(30)
        if errors:
            raise errors[0]
    return latencies


def _print(figures: list[Figure]) -> None:
    header = ("measurement (median of runs)", "wall s", "files written", "bytes written", "links+dirs")
    click.echo(f"{header[0]:40} {header[1]:>9} {header[2]:>14} {header[3]:>14} {header[4]:>11}")
    for fig in figures:
        numbers = f"{fig.wall_s:9.3f} {fig.files_written:14d} {fig.bytes_written:14d} {fig.other_ops:11d}"
        click.echo(f"{fig.name:40} {numbers}")


@click.command("bench-dagsync")
@click.option("--files", default=2000, show_default=True, type=click.IntRange(min=10))
@click.option(
    "--http", "use_http", is_flag=True, help="Serve the repository over smart HTTP instead of file://."
)
@click.option("--webhook-runs", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None)
def bench_dagsync(files: int, use_http: bool, webhook_runs: int, workdir: Path | None) -> None:
    """Measure DAG sync (initial, one-file change, no change, webhook latency) against a naive copy."""
    with tempfile.TemporaryDirectory(prefix="bench-dagsync-", dir=workdir) as tmp:
        root = Path(tmp)
        repo = root / "repo"
        click.echo(f"generating a repository of {files} DAG files ...")
        make_repository(repo, files)
        with serve_http(repo) if use_http else _file_url(repo) as url:
            _run_bench(root, repo, url, webhook_runs)


@contextmanager
def _file_url(repo: Path) -> Iterator[str]:
    yield f"file://{repo}"


def _run_bench(root: Path, repo: Path, url: str, webhook_runs: int) -> None:
    settings = SyncSettings(repository=url, ref="main", target=root / "target", min_release_age_s=0)
    cache = root / "cache"
    figures = [_timed_sync(settings, cache, "initial sync")]
    ones, noops, naives = [], [], []
    for run in range(RUNS):
        change_one_file(repo, f"r{run + 1}")
        ones.append(_timed_sync(settings, cache, "one-file change"))
        noops.append(_timed_sync(settings, cache, "no-change sync"))
        naives.append(naive_clone_and_copy(url, root))
    one, naive = _median(ones), _median(naives)
    figures += [one, _median(noops), naive]
    click.echo(f"transport: {url.split(':')[0]}")
    _print(figures)
    latencies = webhook_latency(settings, cache, repo, webhook_runs)
    click.echo(
        f"push-to-published via the webhook path: median {statistics.median(latencies):.3f} s, "
        f"max {max(latencies):.3f} s over {len(latencies)} pushes"
    )
    speedup = naive.wall_s / one.wall_s if one.wall_s else float("inf")
    goals = [
        (f"one-file change writes <= 5 files ({one.files_written})", one.files_written <= 5),
        (f"one-file change >= 10x faster than naive ({speedup:.1f}x)", speedup >= 10),
        (f"no-change sync < 0.3 s ({figures[2].wall_s:.3f} s)", figures[2].wall_s < 0.3),
        (f"webhook push-to-published < 2 s ({max(latencies):.3f} s max)", max(latencies) < 2),
    ]
    for text, ok in goals:
        click.echo(f"  [{'PASS' if ok else 'FAIL'}] {text}")


COMMANDS: list[click.Command] = [bench_dagsync]
