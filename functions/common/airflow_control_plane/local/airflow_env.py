"""The Airflow configuration every local component runs with, and the services' commands.

One pure function builds the environment (``AIRFLOW__SECTION__KEY`` variables) so the
api-server, scheduler, dag-processor, triggerer and workers cannot disagree: the same fernet
key, API secret key and JWT secret (an unset JWT secret is generated per process and breaks
authentication between components), CeleryExecutor with Redis (or SQS, ``AFCTL_BROKER=sqs``)
as broker and the metadata database as result backend, the FAB auth manager, and the execution
API URL the workers use.
Keys are checked against Airflow 3.3.2's config_templates/config.yml.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from airflow_control_plane.bringup.steps import CORE_SERVICES
from airflow_control_plane.local.secrets_store import SharedKeys

FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
WORKER_SERVICE = "worker"
FLOWER_SERVICE = "flower"
FLOWER_URL_PREFIX = "flower"
ALL_SERVICES: tuple[str, ...] = (*CORE_SERVICES, WORKER_SERVICE)
# Set by the local runtime (never by an operator) in the supervisor and every process it
# starts: `down` finds stray processes of this state folder by it, whatever their group.
STATE_MARKER_ENV = "AFCTL_LOCAL_RUNTIME"
RELEASE_BUNDLE_CLASSPATH = "airflow_control_plane.dagsync.airflow_bundle.ReleaseDagBundle"
EXECUTION_API_TIMEOUT_S = 60
# What the local runtime must own for its components to work together (shared keys, one
# database and broker, the executor, where the api-server listens and how workers reach it).
# A user's AIRFLOW__* setting for any of these is refused; every other one is passed through.
OWNED_SETTINGS: frozenset[str] = frozenset(
    {
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__API__HOST",
        "AIRFLOW__API__PORT",
        "AIRFLOW__API__BASE_URL",
        "AIRFLOW__API_AUTH__JWT_SECRET",
    }
)


@dataclass(frozen=True)
class AirflowEnvInputs:
    airflow_home: Path
    dags_folder: Path
    sqlalchemy_url: str
    broker_url: str
    keys: SharedKeys
    api_host: str
    api_port: int
    api_workers: int
    worker_concurrency: int
    state_dir: Path
    # DAG sync target read through ReleaseDagBundle (dags_folder is then <target>/current);
    # None: the default LocalDagBundle on dags_folder (folder mode).
    dag_bundle_target: Path | None = None
    # ReleaseDagBundle's refresh reads one symlink: checking every second costs nothing
    dag_bundle_refresh_s: int = 1
    # uvicorn's graceful-shutdown and keep-alive timeouts are Airflow's [api] worker_timeout
    # (default 120 s): on SIGTERM the api-server waited for idle keep-alive connections far
    # past the supervisor's grace and was SIGKILLed at every `down`. Kept below the grace.
    api_shutdown_timeout_s: int = 15
    # The broker's [celery_broker_transport_options] (the SQS broker's, as template.yaml sets
    # them); empty for Redis.
    broker_transport_env: tuple[tuple[str, str], ...] = ()

    @property
    def api_base_url(self) -> str:
        host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::") else self.api_host  # noqa: S104
        return f"http://{host}:{self.api_port}"


# How often the dag-processor asks bundles whether a refresh is due (Airflow's default: 5 s);
# template.yaml sets the same for every component (tests/unit/test_template_deploy.py).
BUNDLE_REFRESH_CHECK_INTERVAL_S = 1


def dag_bundle_config(target: Path, refresh_interval_s: int) -> str:
    """One bundle, ReleaseDagBundle over the sync target: one parse reads one resolved release
    and its version (recorded with DAG versions and runs) is the release id, the commit SHA."""
    bundle = {
        "name": "dags",
        "classpath": RELEASE_BUNDLE_CLASSPATH,
        "kwargs": {"target": str(target), "refresh_interval": refresh_interval_s},
    }
    return json.dumps([bundle])


def airflow_environment(inputs: AirflowEnvInputs) -> dict[str, str]:
    """The variables added to every component's environment (and to the one-off jobs)."""
    bundle: dict[str, str] = {}
    if inputs.dag_bundle_target is not None:
        bundle["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = dag_bundle_config(
            inputs.dag_bundle_target, inputs.dag_bundle_refresh_s
        )
        # how often the processor asks bundles whether a refresh is due (Airflow's default: 5 s)
        bundle["AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL"] = str(BUNDLE_REFRESH_CHECK_INTERVAL_S)
    return {
        **bundle,
        **dict(inputs.broker_transport_env),
        "AIRFLOW_HOME": str(inputs.airflow_home),
        "PYTHONDONTWRITEBYTECODE": "1",
        STATE_MARKER_ENV: str(inputs.state_dir),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
        "AIRFLOW__CORE__FERNET_KEY": inputs.keys.fernet_key,
        "AIRFLOW__CORE__DAGS_FOLDER": str(inputs.dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{inputs.api_base_url}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": inputs.sqlalchemy_url,
        "AIRFLOW__CELERY__BROKER_URL": inputs.broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{inputs.sqlalchemy_url}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(inputs.worker_concurrency),
        "AIRFLOW__API__SECRET_KEY": inputs.keys.api_secret_key,
        "AIRFLOW__API__HOST": inputs.api_host,
        "AIRFLOW__API__PORT": str(inputs.api_port),
        "AIRFLOW__API__WORKERS": str(inputs.api_workers),
        "AIRFLOW__API__WORKER_TIMEOUT": str(inputs.api_shutdown_timeout_s),
        "AIRFLOW__API__BASE_URL": inputs.api_base_url,
        "AIRFLOW__API_AUTH__JWT_SECRET": inputs.keys.jwt_secret,
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(inputs.airflow_home / "logs"),
        # A task's first calls to the execution API come while a new worker imports Airflow
        # and providers on the same cores as the api-server: under load the default 5 s
        # timeout (Airflow 3.1.1+) ran out and cost the task a retry. Locally a slow answer
        # is better than a lost attempt; a dead api-server still fails within the retries.
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": str(EXECUTION_API_TIMEOUT_S),
    }


def user_airflow_settings(base: Mapping[str, str]) -> dict[str, str]:
    """The caller's own ``AIRFLOW__*`` settings that ``up`` passes to every component."""
    return {k: v for k, v in base.items() if k.startswith("AIRFLOW__") and k not in OWNED_SETTINGS}


def refused_airflow_settings(base: Mapping[str, str]) -> list[str]:
    """The caller's ``AIRFLOW__*`` settings the local runtime must own (ignored, with a warning)."""
    return sorted(k for k in base if k in OWNED_SETTINGS and base[k] != "")


def process_environment(base: Mapping[str, str], airflow_env: Mapping[str, str]) -> dict[str, str]:
    """``base`` (the caller's environment) with ours on top.

    The caller's ``AIRFLOW__*`` settings reach every component alike (they all get this one
    environment from the supervisor), and win over our defaults, except the OWNED_SETTINGS
    the components need to agree on. ``AIRFLOW_HOME`` is always the state folder's.
    """
    kept = {k: v for k, v in base.items() if not k.startswith("AIRFLOW__") and k != "AIRFLOW_HOME"}
    return {**kept, **airflow_env, **user_airflow_settings(base)}


@dataclass(frozen=True)
class ServiceSpec:
    """How the supervisor runs one service's processes (the local task definition)."""

    name: str
    argv: tuple[str, ...]  # "{index}" is replaced by the process's index within the service
    port_env: str | None = None  # env var given a free port per process (log servers)
    max_count: int | None = None
    # SIGTERM to the whole process group (True) or to the main process only (False). A
    # Celery worker must get it alone: its pool processes would otherwise die at once
    # instead of the worker's warm shutdown (the DUMB_INIT_SETSID=0 lesson of the image).
    term_group: bool = True
    # Variables for this service only (on top of the shared environment): Flower's basic auth,
    # so no other process, and no DAG code on a worker, ever holds it.
    env: tuple[tuple[str, str], ...] = ()

    def argv_for(self, index: int) -> list[str]:
        return [part.replace("{index}", str(index)) for part in self.argv]


def service_specs(airflow_bin: str, worker_concurrency: int) -> dict[str, ServiceSpec]:
    """The local task definitions, one per service (commands verified against Airflow 3.3.2)."""
    specs = (
        # One port, so one api-server process (its own --workers gives parallelism).
        ServiceSpec("api-server", (airflow_bin, "api-server"), max_count=1),
        ServiceSpec("scheduler", (airflow_bin, "scheduler")),
        ServiceSpec("dag-processor", (airflow_bin, "dag-processor")),
        ServiceSpec(
            "triggerer", (airflow_bin, "triggerer"), port_env="AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"
        ),
        ServiceSpec(
            WORKER_SERVICE,
            (
                airflow_bin,
                "celery",
                "worker",
                "--concurrency",
                str(worker_concurrency),
                "--celery-hostname",
                "worker-{index}@%h",
            ),
            port_env="AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
            term_group=False,
        ),
    )
    return {spec.name: spec for spec in specs}


def flower_spec(airflow_bin: str, port: int, username: str, password: str) -> ServiceSpec:
    """Flower on 127.0.0.1 under /flower, as on AWS, never open: its basic auth is Airflow's own
    setting in this service's environment only (not on the command line)."""
    return ServiceSpec(
        FLOWER_SERVICE,
        (
            airflow_bin,
            "celery",
            "flower",
            "--hostname",
            "127.0.0.1",
            "--port",
            str(port),
            "--url-prefix",
            FLOWER_URL_PREFIX,
        ),
        max_count=1,
        env=(("AIRFLOW__CELERY__FLOWER_BASIC_AUTH", f"{username}:{password}"),),
    )
