"""Shared fixtures: the repository, the Airflow runtime environment, and per-run
PostgreSQL databases and Redis db numbers.

Integration tests use the PostgreSQL and Redis running on the machine (defaults
127.0.0.1:5432 trust auth and 127.0.0.1:6379; override with TEST_PG_DSN_BASE and
TEST_REDIS_URL_BASE). Each test run creates its own database and claims its own Redis
db number, so concurrent runs never collide, and cleans up afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pg8000.native
import pytest
import redis
from moto import mock_aws

from airflow_control_plane.scaling.seed import migrate_schema

REPO_ROOT = Path(__file__).resolve().parent.parent
EVENTS_DIR = REPO_ROOT / "events"
RUNTIME_VENV = Path(os.environ.get("AIRFLOW_RUNTIME_VENV", REPO_ROOT / ".venv"))

PG_HOST = os.environ.get("TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("TEST_PG_USER", "postgres")
REDIS_HOST = os.environ.get("TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("TEST_REDIS_PORT", "6379"))
_REDIS_CLAIM_TTL_S = 6 * 3600


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    """template.yaml as written (short-form tags as Fn:: dicts); a fresh copy per module."""
    from tests.static.tools import load_template

    return load_template(REPO_ROOT / "template.yaml")


@pytest.fixture(scope="module")
def translated(template: dict[str, Any]) -> dict[str, Any]:
    """template.yaml as CloudFormation deploys it (SAM translated offline, as tests/static does)."""
    from tests.static.tools import translate

    return translate(template, REPO_ROOT)


def load_event(name: str) -> dict[str, object]:
    """Load a sample event from events/ (they double as test fixtures)."""
    data = json.loads((EVENTS_DIR / name).read_text())
    assert isinstance(data, dict), f"events/{name} must hold a JSON object"
    return data


def load_module(path: Path, name: str, *, reuse: bool = False) -> ModuleType:
    """Import a file that is in no package (a Lambda's app.py, the image's entrypoint) as
    ``name``, registered in sys.modules (dataclasses resolve their module by name). With
    ``reuse``, a module already loaded under that name is returned as it is."""
    if reuse and name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None, path
    assert spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def function_app(function_dir: str, name: str | None = None, *, reuse: bool = False) -> ModuleType:
    """functions/<function_dir>/app.py, loaded as ``name`` (default ``<function_dir>_app``)."""
    path = REPO_ROOT / "functions" / function_dir / "app.py"
    return load_module(path, name or f"{function_dir}_app", reuse=reuse)


@dataclass(frozen=True)
class AirflowRuntime:
    """The runtime environment (.venv) built from airflow_image/requirements.txt."""

    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def airflow(self) -> Path:
        return self.venv / "bin" / "airflow"

    @property
    def afctl(self) -> Path:
        return self.venv / "bin" / "afctl"


@pytest.fixture(scope="session")
def airflow_runtime() -> AirflowRuntime:
    runtime = AirflowRuntime(RUNTIME_VENV)
    if not runtime.airflow.exists():
        pytest.fail(
            f"the Airflow runtime environment is missing at {runtime.venv}: run `make venvs` "
            "(make test builds it before running pytest)"
        )
    return runtime


@dataclass(frozen=True)
class PostgresDatabase:
    host: str
    port: int
    user: str
    name: str

    @property
    def sqlalchemy_url(self) -> str:
        """URL for Airflow's metadata connection (psycopg2 driver in the runtime)."""
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{self.name}"

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.name}"

    def connect(self) -> pg8000.native.Connection:
        return pg8000.native.Connection(user=self.user, host=self.host, port=self.port, database=self.name)


def _admin_connection() -> pg8000.native.Connection:
    try:
        return pg8000.native.Connection(user=PG_USER, host=PG_HOST, port=PG_PORT, database="postgres")
    except Exception as exc:  # pragma: no cover - environment problem, reported clearly
        pytest.fail(f"cannot reach PostgreSQL at {PG_HOST}:{PG_PORT} as {PG_USER}: {exc}")


@pytest.fixture(scope="session")
def pg_database_factory() -> Iterator[object]:
    """Create fresh, uniquely named databases for this run; drop them all at the end."""
    created: list[str] = []

    def create(label: str = "t", template: str | None = None) -> PostgresDatabase:
        name = f"acp_{label}_{os.getpid()}_{uuid.uuid4().hex[:8]}".lower()
        admin = _admin_connection()
        try:
            suffix = f' TEMPLATE "{template}"' if template else ""
            admin.run(f'CREATE DATABASE "{name}"{suffix}')
        finally:
            admin.close()
        created.append(name)
        return PostgresDatabase(PG_HOST, PG_PORT, PG_USER, name)

    yield create

    admin = _admin_connection()
    try:
        for name in created:
            admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


@pytest.fixture(scope="session")
def pg_database(pg_database_factory: object) -> PostgresDatabase:
    """One database for the whole run (tests that need isolation call the factory)."""
    assert callable(pg_database_factory)
    db = pg_database_factory("run")
    assert isinstance(db, PostgresDatabase)
    return db


@pytest.fixture(scope="session")
def migrated_database_factory(
    pg_database_factory: Callable[..., PostgresDatabase],
    airflow_runtime: AirflowRuntime,
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str], PostgresDatabase]:
    """Fresh databases holding the real Airflow schema.

    ``airflow db migrate`` (seconds) runs once per test run into a template database; each
    call then clones it with ``CREATE DATABASE ... TEMPLATE`` (well under a second), so every
    consumer still gets its own isolated database.
    """
    template = pg_database_factory("schema")
    migrate_schema(airflow_runtime.airflow, template.sqlalchemy_url, tmp_path_factory.mktemp("migrate-home"))

    def create(label: str = "m") -> PostgresDatabase:
        return pg_database_factory(label, template=template.name)

    return create


@dataclass(frozen=True)
class RedisDatabase:
    host: str
    port: int
    db: int

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, db=self.db)


@pytest.fixture(scope="session")
def redis_database() -> Iterator[RedisDatabase]:
    """Claim a free Redis db number (1-15) for this run with SET NX in db 0; flush and release it."""
    control = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0)
    try:
        control.ping()
    except redis.RedisError as exc:
        pytest.fail(f"cannot reach Redis at {REDIS_HOST}:{REDIS_PORT}: {exc}")
    token = secrets.token_hex(8)
    for number in range(1, 16):
        if control.exists(f"afctl:redis-db:{number}"):
            continue  # a local environment's broker (airflow_control_plane.local.lease)
        if control.set(f"acp-test-claim:{number}", token, nx=True, ex=_REDIS_CLAIM_TTL_S):
            break
    else:
        pytest.fail("all Redis db numbers 1-15 are claimed by other test runs")
    database = RedisDatabase(REDIS_HOST, REDIS_PORT, number)
    database.client().flushdb()
    yield database
    database.client().flushdb()
    if control.get(f"acp-test-claim:{number}") == token.encode():
        control.delete(f"acp-test-claim:{number}")


@pytest.fixture
def no_lease_left(redis_database: RedisDatabase) -> Iterator[None]:
    """The run's Redis db serves the next module's environment too: no lease outlives a test
    of the light (validate-only) environments."""
    yield
    redis_database.client().delete("afctl:lease")


@pytest.fixture
def moto_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every AWS API in moto, with fake credentials and us-east-1 (no real account is reachable)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield


@pytest.fixture(scope="session")
def local_environments(
    airflow_runtime: AirflowRuntime,
    pg_database_factory: Callable[[str], PostgresDatabase],
    redis_database: RedisDatabase,
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., AbstractContextManager[Any]]:
    """``with local_environments("label", AFCTL_SETTING="..."):`` a local environment
    (tests.harness.LocalEnv) on a fresh state folder and database and the run's Redis db,
    brought down and swept by marker at the end whatever happened."""
    from tests.harness import local_environment

    def start(label: str, **settings: str) -> AbstractContextManager[Any]:
        state = tmp_path_factory.mktemp(f"af{label}")
        return local_environment(
            airflow_runtime, state, pg_database_factory(label), redis_database, **settings
        )

    return start


class FakeClock:
    """A clock and its sleep for waits that take both as inputs: sleeping moves the clock."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
