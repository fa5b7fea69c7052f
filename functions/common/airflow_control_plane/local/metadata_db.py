"""Read-only questions to the Airflow metadata database, with pg8000 (no Airflow import)."""

from __future__ import annotations

from typing import Any

from airflow_control_plane.local.backing import PostgresTarget


def _table_exists(conn: Any, table: str) -> bool:
    return bool(conn.run("SELECT to_regclass(:t) IS NOT NULL", t=f"public.{table}")[0][0])


def schema_revision(target: PostgresTarget) -> str | None:
    conn = target.connect()
    try:
        if not _table_exists(conn, "alembic_version"):
            return None
        rows = conn.run("SELECT version_num FROM alembic_version")
        return str(rows[0][0]) if rows else None
    finally:
        conn.close()


def user_exists(target: PostgresTarget, username: str) -> bool | None:
    """None if the FAB user table does not exist yet."""
    conn = target.connect()
    try:
        if not _table_exists(conn, "ab_user"):
            return None
        return bool(conn.run("SELECT 1 FROM ab_user WHERE username = :u", u=username))
    finally:
        conn.close()


def active_task_count(target: PostgresTarget) -> int:
    """Task instances running or queued (what a hibernation must let finish)."""
    conn = target.connect()
    try:
        if not _table_exists(conn, "task_instance"):
            return 0
        rows = conn.run("SELECT count(*) FROM task_instance WHERE state IN ('running', 'queued')")
        return int(rows[0][0])
    finally:
        conn.close()
