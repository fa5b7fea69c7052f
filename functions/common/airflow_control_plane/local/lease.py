"""Which local environment owns a metadata database and a Redis db: names and leases.

Each state folder (one per checkout by default) gets its own database name and Redis db
number, derived from the folder's path, so two checkouts side by side never share by
accident. What an environment uses is marked with a lease naming its state folder:

- in PostgreSQL, one row in the table ``afctl_lease`` of the metadata database;
- in Redis, the key ``afctl:lease`` in the db it uses, and the claim ``afctl:redis-db:<n>``
  in db 0 that reserves the number.

A second environment that finds another one's lease refuses, naming the owner, unless it
is asked to join (``AFCTL_JOIN=1`` / ``afctl up --join``). A database that already holds an
Airflow schema with no lease and no record of this state folder migrating it was made by
something else: it is refused too, never taken over silently. The decisions are pure;
the adapters below read and write the marks.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airflow_control_plane.errors import ConfigError
from airflow_control_plane.local.backing import PostgresTarget, RedisTarget

JOIN_ENV = "AFCTL_JOIN"
LEASE_TABLE = "afctl_lease"
REDIS_LEASE_KEY = "afctl:lease"
REDIS_CLAIM_PREFIX = "afctl:redis-db:"
REDIS_DB_NUMBERS = range(1, 16)  # db 0 holds the claims; Redis has 16 dbs by default


def _digest(root: Path) -> str:
    return hashlib.sha256(str(root).encode()).hexdigest()


def default_database_name(root: Path) -> str:
    """``airflow_<checkout>_<hash>``: readable in ``\\l``, unique per state folder path."""
    label = root.parent.name if root.name == ".local" else root.name
    slug = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:24] or "local"
    return f"airflow_{slug}_{_digest(root)[:8]}"


def preferred_redis_db(root: Path) -> int:
    """The first Redis db number tried for this state folder (the next free one is taken)."""
    return REDIS_DB_NUMBERS[int(_digest(root)[:8], 16) % len(REDIS_DB_NUMBERS)]


def redis_db_candidates(root: Path) -> list[int]:
    first = preferred_redis_db(root)
    numbers = list(REDIS_DB_NUMBERS)
    start = numbers.index(first)
    return numbers[start:] + numbers[:start]


@dataclass(frozen=True)
class LeaseDecision:
    proceed: bool
    claim: bool  # write our lease (only when proceeding)
    joined: bool  # proceeding on what another environment owns
    reason: str


def decide_database_lease(
    *,
    owner: str | None,
    me: str,
    database: str,
    has_airflow_schema: bool,
    migrated_by_me: bool,
    join: bool,
) -> LeaseDecision:
    """Use the metadata database, claim it, or refuse (the safe default: refuse)."""
    if owner == me:
        return LeaseDecision(True, False, False, f"database {database} is leased to this state folder")
    if owner is not None:
        if join:
            return LeaseDecision(
                True, False, True, f"joining database {database} of the environment in {owner} ({JOIN_ENV})"
            )
        return LeaseDecision(
            False,
            False,
            False,
            f"database {database} is in use by the local environment in {owner}. Two environments on "
            f"one database run two schedulers and fight over the admin password. Use another "
            f"database (AFCTL_DATABASE_URL), stop and `afctl reset` that environment, or set "
            f"{JOIN_ENV}=1 (afctl up --join) to join it on purpose",
        )
    if not has_airflow_schema:
        return LeaseDecision(True, True, False, f"database {database} is empty: leased to this state folder")
    if migrated_by_me:
        return LeaseDecision(
            True, True, False, f"database {database} was migrated from this state folder: leased to it"
        )
    if join:
        return LeaseDecision(
            True,
            True,
            True,
            f"database {database} holds an Airflow schema made elsewhere; taken over as asked ({JOIN_ENV})",
        )
    return LeaseDecision(
        False,
        False,
        False,
        f"database {database} already holds an Airflow schema that no local environment leases and "
        f"this state folder did not create. It is not taken over silently: point AFCTL_DATABASE_URL "
        f"at another database, or set {JOIN_ENV}=1 (afctl up --join) to use it anyway",
    )


def decide_redis_lease(*, owner: str | None, me: str, where: str, join: bool) -> LeaseDecision:
    if owner is None:
        return LeaseDecision(True, True, False, f"Redis {where} leased to this state folder")
    if owner == me:
        return LeaseDecision(True, False, False, f"Redis {where} is leased to this state folder")
    if join:
        return LeaseDecision(True, False, True, f"joining Redis {where} of the environment in {owner}")
    return LeaseDecision(
        False,
        False,
        False,
        f"Redis {where} is the broker of the local environment in {owner}: its workers would run "
        f"this environment's tasks. Use another db (AFCTL_REDIS_URL=redis://host:port/N) or set "
        f"{JOIN_ENV}=1 (afctl up --join) to join it on purpose",
    )


# --- PostgreSQL adapter ------------------------------------------------------------------------


def _table_exists(conn: Any, table: str) -> bool:
    return bool(conn.run("SELECT to_regclass(:t) IS NOT NULL", t=f"public.{table}")[0][0])


def read_database_lease(target: PostgresTarget) -> tuple[str | None, bool]:
    """(lease owner or None, whether the database holds an Airflow schema)."""
    conn = target.connect()
    try:
        owner = None
        if _table_exists(conn, LEASE_TABLE):
            rows = conn.run("SELECT owner FROM afctl_lease WHERE id = 1")
            owner = str(rows[0][0]) if rows else None
        return owner, _table_exists(conn, "alembic_version")
    finally:
        conn.close()


def write_database_lease(target: PostgresTarget, owner: str) -> str:
    """Claim the lease unless someone holds it; the owner afterwards (first writer wins)."""
    conn = target.connect()
    try:
        conn.run(
            "CREATE TABLE IF NOT EXISTS afctl_lease (id int PRIMARY KEY CHECK (id = 1), "
            "owner text NOT NULL, claimed_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.run("INSERT INTO afctl_lease (id, owner) VALUES (1, :o) ON CONFLICT (id) DO NOTHING", o=owner)
        return str(conn.run("SELECT owner FROM afctl_lease WHERE id = 1")[0][0])
    finally:
        conn.close()


def release_database_lease(target: PostgresTarget, owner: str) -> None:
    conn = target.connect()
    try:
        if _table_exists(conn, LEASE_TABLE):
            conn.run("DELETE FROM afctl_lease WHERE owner = :o", o=owner)
    finally:
        conn.close()


# --- Redis adapter -------------------------------------------------------------------------------


def _client(target: RedisTarget, db: int | None = None) -> Any:
    import redis

    # The URL's own db number would win over a ``db`` argument: put the number in the URL
    # (which keeps its password and TLS scheme).
    number = target.db if db is None else db
    url = urlunsplit(urlsplit(target.url)._replace(path=f"/{number}"))
    return redis.Redis.from_url(url, socket_timeout=5)


def read_redis_lease(target: RedisTarget) -> str | None:
    value = _client(target).get(REDIS_LEASE_KEY)
    return None if value is None else bytes(value).decode()


def write_redis_lease(target: RedisTarget, owner: str) -> str:
    """Claim the marker unless someone holds it; the owner afterwards (first writer wins)."""
    _client(target).set(REDIS_LEASE_KEY, owner, nx=True)
    return read_redis_lease(target) or ""


def read_redis_claim(target: RedisTarget) -> str | None:
    """Who claimed this db number in db 0 (set only for numbers chosen by default)."""
    value = _client(target, 0).get(f"{REDIS_CLAIM_PREFIX}{target.db}")
    return None if value is None else bytes(value).decode()


def release_redis_marker(target: RedisTarget, owner: str) -> None:
    """Let go of the db's marker (the db number stays claimed for this state folder)."""
    if read_redis_lease(target) == owner:
        _client(target).delete(REDIS_LEASE_KEY)


def release_redis_lease(target: RedisTarget, owner: str) -> None:
    """The marker and the db number's claim in db 0."""
    release_redis_marker(target, owner)
    control = _client(target, 0)
    claim = control.get(f"{REDIS_CLAIM_PREFIX}{target.db}")
    if claim is not None and bytes(claim).decode() == owner:
        control.delete(f"{REDIS_CLAIM_PREFIX}{target.db}")


def claim_redis_db(host: str, port: int, root: Path) -> str:
    """Reserve a Redis db number for this state folder (SET NX in db 0); its URL."""
    owner = str(root)
    base = RedisTarget(host, port, 0, f"redis://{host}:{port}/0")
    control = _client(base, 0)
    for number in redis_db_candidates(root):
        key = f"{REDIS_CLAIM_PREFIX}{number}"
        if control.get(key) is None and _client(base, number).dbsize() > 0:
            continue  # holds keys but no claim: something else uses it
        control.set(key, owner, nx=True)
        holder = control.get(key)
        if holder is not None and bytes(holder).decode() == owner:
            return f"redis://{host}:{port}/{number}"
    raise ConfigError(
        f"every Redis db number 1-15 at {host}:{port} is claimed by another local environment "
        f"(keys {REDIS_CLAIM_PREFIX}N in db 0) or holds keys of something else; set "
        f"AFCTL_REDIS_URL=redis://{host}:{port}/N to choose one"
    )
