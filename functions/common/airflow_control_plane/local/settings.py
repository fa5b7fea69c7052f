"""The local runtime's configuration: one frozen dataclass built from the environment.

Every setting has a local default so ``make up`` works on a fresh machine; each one can be
overridden with an ``AFCTL_*`` variable, and a malformed value fails loudly.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from airflow_control_plane.config import optional_bool, optional_int, optional_str
from airflow_control_plane.errors import ConfigError
from airflow_control_plane.local.lease import JOIN_ENV, default_database_name
from airflow_control_plane.local.paths import StatePaths, repo_root
from airflow_control_plane.local.sqs_broker import BROKERS, SqsBroker

DEFAULT_POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"
# Without AFCTL_REDIS_URL the db number is claimed per state folder at the first `up`
# (local/lease.py) and kept in state.json; this URL names only the server.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def default_database_url(root: Path) -> str:
    """The local server, with a database name of this state folder's own."""
    return f"{DEFAULT_POSTGRES_SERVER}/{default_database_name(root)}"


def default_airflow_bin() -> str:
    """The ``airflow`` next to this interpreter (the runtime venv), else the one on PATH."""
    sibling = Path(sys.executable).parent / "airflow"
    return str(sibling) if sibling.exists() else "airflow"


def _port(name: str, default: int, source: Mapping[str, str]) -> int:
    port = optional_int(name, default, source, minimum=1)
    if port > 65535:
        raise ConfigError(f"environment variable {name} must be <= 65535, got {port}")
    return port


@dataclass(frozen=True)
class LocalSettings:
    paths: StatePaths
    database_url: str
    redis_url: str
    # The working-tree DAGs folder read in folder mode; where DAGs come from (this repository
    # through DAG sync by default) is decided by local/dag_source.py.
    dags_folder: Path
    airflow_bin: str
    api_host: str
    api_port: int  # 0: choose a free port at the first `up` and keep it
    api_workers: int
    workers_min: int
    worker_concurrency: int
    admin_username: str
    migrate_timeout_s: int
    steady_timeout_s: int
    health_timeout_s: int
    stop_grace_s: int
    drain_timeout_s: int
    # Worker autoscaling (local/autoscaler.py): on by default, so workers go 0 -> N -> 0.
    autoscale: bool = True
    workers_max: int = 3
    autoscale_interval_s: int = 5
    autoscale_idle_s: int = 60
    autoscale_prewarm_s: int = 0  # lead time: workers started for scheduled runs due that soon
    # Set when the operator chose the URL (AFCTL_DATABASE_URL / AFCTL_REDIS_URL): then the
    # embedded fallback never applies and a default name or db number is never derived.
    database_configured: bool = False
    redis_configured: bool = False
    # Use a database / Redis db another local environment leases (AFCTL_JOIN, up --join).
    join: bool = False
    # Flower (AFCTL_FLOWER=true): started with the workers, stopped with them, behind basic auth.
    flower: bool = False
    flower_port: int = 5555
    # The Celery broker (AFCTL_BROKER): "redis" (default) or "sqs" (AFCTL_SQS_*; README
    # "SQS broker"). With SQS, Redis still runs but no component uses it.
    broker: str = "redis"
    sqs: SqsBroker | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LocalSettings:
        source = os.environ if env is None else env
        dags = Path(optional_str("AFCTL_DAGS_FOLDER", str(repo_root() / "dags"), source)).expanduser()
        port = optional_int("AFCTL_API_PORT", 0, source, minimum=0)
        autoscale = optional_bool("AFCTL_AUTOSCALE", True, source)
        if port > 65535:
            raise ConfigError(f"environment variable AFCTL_API_PORT must be <= 65535, got {port}")
        paths = StatePaths.from_env(source)
        return cls(
            paths=paths,
            database_url=optional_str("AFCTL_DATABASE_URL", default_database_url(paths.root), source),
            redis_url=optional_str("AFCTL_REDIS_URL", DEFAULT_REDIS_URL, source),
            dags_folder=dags.resolve(),
            airflow_bin=optional_str("AFCTL_AIRFLOW_BIN", default_airflow_bin(), source),
            api_host=optional_str("AFCTL_API_HOST", "127.0.0.1", source),
            api_port=port,
            api_workers=optional_int("AFCTL_API_WORKERS", 1, source, minimum=1),
            # With the autoscaler on, idle workers go to zero; without it one worker stays up.
            workers_min=optional_int("AFCTL_WORKERS_MIN", 0 if autoscale else 1, source, minimum=0),
            worker_concurrency=optional_int("AFCTL_WORKER_CONCURRENCY", 4, source, minimum=1),
            admin_username=optional_str("AFCTL_ADMIN_USERNAME", "admin", source),
            migrate_timeout_s=optional_int("AFCTL_MIGRATE_TIMEOUT", 600, source, minimum=1),
            steady_timeout_s=optional_int("AFCTL_STEADY_TIMEOUT", 180, source, minimum=1),
            health_timeout_s=optional_int("AFCTL_HEALTH_TIMEOUT", 300, source, minimum=1),
            stop_grace_s=optional_int("AFCTL_STOP_GRACE", 20, source, minimum=0),
            drain_timeout_s=optional_int("AFCTL_DRAIN_TIMEOUT", 300, source, minimum=0),
            autoscale=autoscale,
            workers_max=optional_int("AFCTL_WORKERS_MAX", 3, source, minimum=1),
            autoscale_interval_s=optional_int("AFCTL_AUTOSCALE_INTERVAL", 5, source, minimum=1),
            autoscale_idle_s=optional_int("AFCTL_AUTOSCALE_IDLE_SECONDS", 60, source, minimum=0),
            autoscale_prewarm_s=optional_int("AFCTL_AUTOSCALE_PREWARM_SECONDS", 0, source, minimum=0),
            database_configured=bool(source.get("AFCTL_DATABASE_URL", "").strip()),
            redis_configured=bool(source.get("AFCTL_REDIS_URL", "").strip()),
            join=optional_bool(JOIN_ENV, False, source),
            flower=optional_bool("AFCTL_FLOWER", False, source),
            flower_port=_port("AFCTL_FLOWER_PORT", 5555, source),
            broker=_broker(source),
            sqs=_sqs(paths.root, source) if _broker(source) == "sqs" else None,
        )


def _broker(source: Mapping[str, str]) -> str:
    broker = optional_str("AFCTL_BROKER", "redis", source).strip().lower() or "redis"
    if broker not in BROKERS:
        raise ConfigError(f"environment variable AFCTL_BROKER must be one of {BROKERS}, got {broker!r}")
    return broker


def _sqs(root: Path, source: Mapping[str, str]) -> SqsBroker:
    region = source.get("AWS_REGION") or source.get("AWS_DEFAULT_REGION") or "us-east-1"
    return SqsBroker(
        region=optional_str("AFCTL_SQS_REGION", region, source),
        # Per state folder, like the database name: two environments on one SQS never share a queue.
        queue_name_prefix=optional_str("AFCTL_SQS_QUEUE_PREFIX", f"{default_database_name(root)}-", source),
        endpoint_url=optional_str("AFCTL_SQS_ENDPOINT_URL", "", source).strip(),
    )
