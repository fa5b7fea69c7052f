"""The Airflow metadata database through pg8000: the one way to connect, and what bring-up asks.

Every part of the control plane that reads the metadata database (the drain check, the
autoscaler's demand reader, the DAG sync's release-in-use reader, ``afctl up``/``down`` and
the benchmarks) turns a DSN into a connection with :func:`connect` (or a connector with
:func:`connector`): ``postgresql://user:password@host:5432/db?sslmode=require``, or a Unix
socket as ``postgresql://user@/db?host=/socket/dir&port=5432``. Where the credentials live
in an RDS-style secret, :func:`rds_secret_connector` builds the DSN from it at each connect.
``sslmode`` follows libpq's names (airflow_control_plane/pg_tls.py); without it the
connection is plain.

The read-only questions of the one-off jobs (:func:`schema_revision`, :func:`user_exists`)
take a connector, so a test or another runtime passes its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from airflow_control_plane.errors import ConfigError
from airflow_control_plane.pg_tls import ssl_context
from airflow_control_plane.secret_source import SecretReader, database_credentials

DEFAULT_TIMEOUT_S = 10.0
Connector = Callable[[], Any]  # returns a fresh pg8000.native.Connection; the caller closes it


def connection_kwargs(dsn: str, *, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """The ``pg8000.native.Connection`` arguments for a DSN (ConfigError if it is not one)."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    socket_dir = query.get("host", [""])[-1]
    if parts.scheme.split("+")[0] not in {"postgresql", "postgres"} or not (parts.hostname or socket_dir):
        raise ConfigError(
            f"metadata database URL must look like postgresql://user:pass@host:5432/db, got {dsn!r}"
        )
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise ConfigError("metadata database URL names no database")
    try:
        port = parts.port or int(query.get("port", ["5432"])[-1])
    except ValueError as exc:
        raise ConfigError(f"database URL has a malformed port: {exc}") from None
    kwargs: dict[str, Any] = {
        "user": unquote(parts.username or "postgres"),
        "password": unquote(parts.password) if parts.password else None,
        "database": database,
    }
    if socket_dir.startswith("/"):
        kwargs["unix_sock"] = f"{socket_dir}/.s.PGSQL.{port}"
    else:
        kwargs.update(host=socket_dir or parts.hostname, port=port)
    # The URL's sslmode (the stack's URL says require: RDS forces SSL); none means disable.
    kwargs["ssl_context"] = ssl_context(query.get("sslmode", ["disable"])[-1])
    kwargs["timeout"] = timeout_s
    return kwargs


def connect(dsn: str, *, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> Any:
    """A new pg8000 connection for ``dsn``."""
    import pg8000.native  # imported here: the local CLI starts without it where it is not needed

    return pg8000.native.Connection(**connection_kwargs(dsn, timeout_s=timeout_s))


def connector(dsn: Callable[[], str], *, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> Connector:
    """A connector that asks ``dsn`` at each connect (so a rotated secret is picked up)."""
    return lambda: connect(dsn(), timeout_s=timeout_s)


def build_dsn(*, host: str, port: int, database: str, user: str, password: str | None, sslmode: str) -> str:
    """A DSN from its parts (say, the host from the environment and the user from a secret)."""
    auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    return f"postgresql://{auth}@{host}:{port}/{quote(database, safe='')}?sslmode={quote(sslmode, safe='')}"


def rds_secret_connector(
    secret: SecretReader,
    secret_id: str,
    *,
    host: str,
    port: int,
    database: str,
    sslmode: str,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
) -> Connector:
    """A connector whose user and password come from an RDS-style JSON secret, read at each
    connect (a rotated password is picked up; the Lambdas hold no connection between polls)."""

    def current_dsn() -> str:
        user, password = database_credentials(secret.read(), secret_id)
        return build_dsn(
            host=host, port=port, database=database, user=user, password=password, sslmode=sslmode
        )

    return connector(current_dsn, timeout_s=timeout_s)


def _table_exists(conn: Any, table: str) -> bool:
    return bool(conn.run("SELECT to_regclass(:t) IS NOT NULL", t=f"public.{table}")[0][0])


def schema_revision(connect: Connector) -> str | None:
    """The Alembic revision of Airflow's schema; None when there is no schema yet."""
    conn = connect()
    try:
        if not _table_exists(conn, "alembic_version"):
            return None
        rows = conn.run("SELECT version_num FROM alembic_version")
        return str(rows[0][0]) if rows else None
    finally:
        conn.close()


def user_exists(connect: Connector, username: str) -> bool | None:
    """Whether the FAB user exists; None if the FAB user table does not exist yet."""
    conn = connect()
    try:
        if not _table_exists(conn, "ab_user"):
            return None
        return bool(conn.run("SELECT 1 FROM ab_user WHERE username = :u", u=username))
    finally:
        conn.close()
