"""The TLS context really reaches the wire: against the local PostgreSQL (ssl=off here),
'require' must fail the connection instead of silently falling back to plain TCP, and
'disable' connects."""

from __future__ import annotations

import pg8000.native
import pytest

from airflow_control_plane.pg_tls import ssl_context
from tests.conftest import PostgresDatabase

pytestmark = pytest.mark.contract


def _server_has_ssl(db: PostgresDatabase) -> bool:
    conn = db.connect()
    try:
        return str(conn.run("SHOW ssl")[0][0]) == "on"
    finally:
        conn.close()


def test_require_never_falls_back_to_plain_tcp(pg_database: PostgresDatabase) -> None:
    if _server_has_ssl(pg_database):
        pytest.skip("this PostgreSQL serves TLS, so the refusal path cannot be shown here")
    # GIVEN a server without TLS
    # WHEN the control plane connects with sslmode=require
    # THEN pg8000 asks for TLS and the server's refusal surfaces as an error
    with pytest.raises(pg8000.exceptions.InterfaceError, match="SSL"):
        pg8000.native.Connection(
            user=pg_database.user,
            host=pg_database.host,
            port=pg_database.port,
            database=pg_database.name,
            ssl_context=ssl_context("require"),
            timeout=10,
        )


def test_disable_connects_in_plain_tcp(pg_database: PostgresDatabase) -> None:
    conn = pg8000.native.Connection(
        user=pg_database.user,
        host=pg_database.host,
        port=pg_database.port,
        database=pg_database.name,
        ssl_context=ssl_context("disable"),
        timeout=10,
    )
    try:
        assert conn.run("SELECT 1") == [[1]]
    finally:
        conn.close()
