"""Two checkouts (two state folders) side by side: isolated by default, a shared database
refused unless joining on purpose, and a database made by something else never taken over.

The bring-up's first step (validate_input: backing services, names, leases, port) runs for
real against the machine's PostgreSQL and Redis; no Airflow process is started, so these
tests stay light. test_local_runtime.py refuses a second `afctl up` on a running one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pg8000.native
import pytest
import redis

from airflow_control_plane.errors import ConfigError
from airflow_control_plane.local import lease
from airflow_control_plane.local.backing import PostgresTarget, RedisTarget
from airflow_control_plane.local.bringup import BringUp, UpContext
from airflow_control_plane.local.reset import apply_reset, plan_reset
from airflow_control_plane.local.runtime_state import RuntimeState
from airflow_control_plane.local.settings import LocalSettings
from tests.conftest import PG_HOST, PG_PORT, PG_USER, REDIS_HOST, REDIS_PORT, PostgresDatabase, RedisDatabase

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _no_lease_left(redis_database: RedisDatabase) -> Iterator[None]:
    """The run's Redis db serves the next module's environment too: no lease outlives a test."""
    yield
    redis_database.client().delete("afctl:lease")


def _env(state: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AFCTL_"))}
    env.update({"AFCTL_STATE_DIR": str(state), "AFCTL_DAGS_SOURCE": "folder", **extra})
    return env


def _validate(env: dict[str, str]) -> UpContext:
    context, _ = BringUp(LocalSettings.from_env(env), lambda _line: None, base_env=env).validate_input()
    return context


@pytest.fixture
def default_servers_cleanup() -> Iterator[list[Path]]:
    """State folders whose default database and Redis db are dropped/released afterwards."""
    roots: list[Path] = []
    yield roots
    admin = pg8000.native.Connection(user=PG_USER, host=PG_HOST, port=PG_PORT, database="postgres")
    try:
        for root in roots:
            state = RuntimeState.load(LocalSettings.from_env(_env(root)).paths)
            if state.redis_url:
                target = RedisTarget.parse(state.redis_url)
                redis.Redis(host=target.host, port=target.port, db=target.db).flushdb()
                lease.release_redis_lease(target, str(root.resolve()))
            admin.run(f'DROP DATABASE IF EXISTS "{lease.default_database_name(root.resolve())}" WITH (FORCE)')
    finally:
        admin.close()


def test_two_checkouts_side_by_side_get_their_own_database_and_redis_db(
    tmp_path: Path, default_servers_cleanup: list[Path]
) -> None:
    if (PG_HOST, PG_PORT, REDIS_HOST, REDIS_PORT) != ("127.0.0.1", 5432, "127.0.0.1", 6379):
        pytest.skip("the defaults point at 127.0.0.1:5432/6379; this run's servers are elsewhere")
    # GIVEN two state folders (two checkouts) and no AFCTL_DATABASE_URL / AFCTL_REDIS_URL
    first, second = tmp_path / "clone-a" / ".local", tmp_path / "clone-b" / ".local"
    default_servers_cleanup.extend([first, second])
    # WHEN each one's bring-up validates its input
    a, b = _validate(_env(first)), _validate(_env(second))
    # THEN each has its own database, named after its checkout, and its own Redis db number
    assert a.target is not None
    assert b.target is not None
    assert a.target.database.startswith("airflow_clone_a_")
    assert b.target.database.startswith("airflow_clone_b_")
    state_a, state_b = RuntimeState.load(a.settings.paths), RuntimeState.load(b.settings.paths)
    assert state_a.redis_url is not None
    assert state_b.redis_url is not None
    assert RedisTarget.parse(state_a.redis_url).db != RedisTarget.parse(state_b.redis_url).db
    # AND each holds the lease on what it uses, naming its own state folder
    assert lease.read_database_lease(a.target)[0] == str(first.resolve())
    assert lease.read_database_lease(b.target)[0] == str(second.resolve())
    assert lease.read_redis_lease(RedisTarget.parse(state_b.redis_url)) == str(second.resolve())
    # AND a second validation of the first keeps the same database and Redis db
    again = _validate(_env(first))
    assert again.target == a.target
    assert RuntimeState.load(again.settings.paths).redis_url == state_a.redis_url
    # WHEN the first hibernates (its Redis marker is let go) and is then reset
    redis_a = RedisTarget.parse(state_a.redis_url)
    lease.release_redis_marker(redis_a, str(first.resolve()))
    apply_reset(plan_reset(a.settings.paths))
    # THEN its database, its db number's claim and its state folder are gone; the second's stay
    assert lease.read_redis_claim(redis_a) is None
    assert lease.read_redis_claim(RedisTarget.parse(state_b.redis_url)) == str(second.resolve())
    assert not first.exists()
    assert lease.read_database_lease(b.target)[0] == str(second.resolve())


def test_a_shared_database_is_refused_and_joined_only_when_asked(
    tmp_path: Path,
    pg_database_factory: Callable[[str], PostgresDatabase],
    redis_database: RedisDatabase,
) -> None:
    # GIVEN one database and Redis db, used by the environment of a first state folder
    database = pg_database_factory("shared")
    shared = {"AFCTL_DATABASE_URL": database.dsn, "AFCTL_REDIS_URL": redis_database.url}
    owner = tmp_path / "a"
    _validate(_env(owner, **shared))
    # WHEN a second state folder points at them
    # THEN it is refused, naming the owner and how to join on purpose
    with pytest.raises(ConfigError, match=r"in use by the local environment in .*AFCTL_JOIN=1") as refused:
        _validate(_env(tmp_path / "b", **shared))
    assert str(owner.resolve()) in str(refused.value)
    # AND nothing was recorded for it
    assert RuntimeState.load(LocalSettings.from_env(_env(tmp_path / "b")).paths).database_url is None
    # WHEN it asks to join
    joined = _validate(_env(tmp_path / "b", AFCTL_JOIN="1", **shared))
    # THEN it proceeds as a joiner and the lease stays with the owner
    assert joined.joined is True
    target = PostgresTarget.parse(database.dsn)
    assert lease.read_database_lease(target)[0] == str(owner.resolve())
    assert lease.read_redis_lease(RedisTarget.parse(redis_database.url)) == str(owner.resolve())


def test_a_database_with_a_schema_made_elsewhere_is_not_taken_over_silently(
    tmp_path: Path,
    pg_database_factory: Callable[[str], PostgresDatabase],
    redis_database: RedisDatabase,
) -> None:
    # GIVEN a database that already holds an Airflow schema (its alembic_version table), no lease
    database = pg_database_factory("foreign")
    conn = database.connect()
    try:
        conn.run("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.run("INSERT INTO alembic_version VALUES ('abc123')")
    finally:
        conn.close()
    env = _env(tmp_path / "s", AFCTL_DATABASE_URL=database.dsn, AFCTL_REDIS_URL=redis_database.url)
    # WHEN a state folder that never migrated it validates
    # THEN it is refused with the way out, and no lease is written
    with pytest.raises(ConfigError, match="not taken over silently"):
        _validate(env)
    target = PostgresTarget.parse(database.dsn)
    assert lease.read_database_lease(target) == (None, True)
    # AND with AFCTL_JOIN=1 it is taken over explicitly, leased to this state folder
    _validate({**env, "AFCTL_JOIN": "1"})
    assert lease.read_database_lease(target)[0] == str((tmp_path / "s").resolve())
