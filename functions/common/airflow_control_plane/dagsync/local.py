"""Wiring for local use (the CLI, the local runtime, the bench): real clock, dulwich, JSON-lines events."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from airflow_control_plane.dagsync.credentials import EnvironmentSecret, GitCredentials, parse_secret
from airflow_control_plane.dagsync.git_source import DulwichGitSource
from airflow_control_plane.dagsync.service import Clock


def system_clock() -> Clock:
    return Clock(now=time.time, monotonic=time.monotonic, new_id=lambda: uuid.uuid4().hex)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "afctl" / "dagsync"


def local_source(
    url: str, cache_dir: Path, token_env: str | None = None, *, history_depth: int = 50
) -> DulwichGitSource:
    credentials: GitCredentials | None = None
    if token_env:
        credentials = parse_secret(EnvironmentSecret(token_env).read())
    return DulwichGitSource(url, cache_dir, credentials, history_depth=history_depth)
