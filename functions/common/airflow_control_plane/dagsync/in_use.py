"""Which releases queued or running DAG runs use: a port, read from Airflow's metadata database.

Airflow 3 pins a DAG run to the bundle version it started with (``dag_run.bundle_version``);
with :class:`~airflow_control_plane.dagsync.airflow_bundle.ReleaseDagBundle` that version is
the release id. Retention must not delete such a release: a long run, or a retry hours
later, would lose its code. A read that fails raises ``TransientError``, and retention then
deletes nothing (the safe default).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

from airflow_control_plane.errors import TransientError

IN_USE_SQL = (
    "SELECT DISTINCT bundle_version FROM dag_run "
    "WHERE state IN ('queued', 'running') AND bundle_version IS NOT NULL"
)


class ReleasesInUse(Protocol):
    def release_ids(self) -> frozenset[str]: ...


class StaticReleasesInUse:
    """Fixed answer (tests, and targets that no Airflow reads)."""

    def __init__(self, ids: frozenset[str] = frozenset(), error: str | None = None) -> None:
        self._ids = ids
        self._error = error

    def release_ids(self) -> frozenset[str]:
        if self._error is not None:
            raise TransientError(self._error)
        return self._ids


class PostgresReleasesInUse:
    """pg8000 adapter: ``connect`` opens a fresh connection, closed after each read."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect

    def release_ids(self) -> frozenset[str]:
        try:
            conn = self._connect()
        except Exception as exc:  # pg8000 raises InterfaceError/OSError subclasses
            raise TransientError(f"cannot connect to the metadata database: {exc}") from exc
        try:
            conn.run("SET statement_timeout = 10000")
            rows = conn.run(IN_USE_SQL)
        except Exception as exc:
            raise TransientError(f"cannot read the DAG runs' bundle versions: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):
                conn.close()
        return frozenset(str(row[0]) for row in rows or [])
