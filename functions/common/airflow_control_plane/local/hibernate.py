"""``afctl down``: the hibernate steps of HIBERNATE_ORDER, run locally and timed.

Same order as the AWS state machine: stop the scheduler first (nothing new gets queued),
drain (bounded; ``--force`` skips it), then workers, triggerer, dag-processor, api-server to
zero. The metadata database stays intact, so a later ``up`` resumes. Finally the supervisor
exits and any stray process of this state folder is stopped: nothing is left behind.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from airflow_control_plane.bringup.steps import HIBERNATE_ORDER, HibernateStep
from airflow_control_plane.errors import ControlPlaneError
from airflow_control_plane.local import autoscaler as local_autoscaler
from airflow_control_plane.local import backing, lease, metadata_db, proc
from airflow_control_plane.local.airflow_env import FLOWER_SERVICE, STATE_MARKER_ENV, WORKER_SERVICE
from airflow_control_plane.local.decisions import decide_drain
from airflow_control_plane.local.ecs import LocalEcs
from airflow_control_plane.local.runtime_state import RuntimeState
from airflow_control_plane.local.settings import LocalSettings
from airflow_control_plane.local.step_report import StepReporter

_STOP_STEPS: dict[HibernateStep, str] = {
    HibernateStep.STOP_SCHEDULER: "scheduler",
    HibernateStep.STOP_WORKERS: WORKER_SERVICE,
    HibernateStep.STOP_TRIGGERER: "triggerer",
    HibernateStep.STOP_DAG_PROCESSOR: "dag-processor",
    HibernateStep.STOP_API_SERVER: "api-server",
}


PROGRESS_EVERY_S = 10.0


@dataclass
class Hibernate:
    settings: LocalSettings
    echo: Callable[[str], None]
    force: bool = False
    drain_timeout_s: float | None = None
    running: bool = False

    def run(self) -> StepReporter:
        reporter = StepReporter(self.echo, len(HIBERNATE_ORDER))
        self.ecs = LocalEcs(self.settings.paths)
        for step in HIBERNATE_ORDER:
            if step is HibernateStep.VALIDATE_INPUT:
                reporter.run(step, self.validate_input)
            elif step is HibernateStep.DRAIN_TASKS:
                reporter.run(step, self.drain_tasks)
            elif step is HibernateStep.ANNOUNCE_HIBERNATED:
                reporter.run(step, self.announce_hibernated)
            elif step is HibernateStep.STOP_WORKERS:
                reporter.run(step, self.stop_workers)
            else:
                service = _STOP_STEPS[step]
                reporter.run(step, lambda service=service: self.stop_service(service))  # type: ignore[misc]
        return reporter

    def validate_input(self) -> str:
        if self.drain_timeout_s is not None and self.drain_timeout_s < 0:
            raise ControlPlaneError("--drain-timeout must be >= 0")
        self.state = RuntimeState.load(self.settings.paths)
        self.running = self.settings.paths.root.is_dir() and self.ecs.is_running()
        if not self.running:
            return f"no supervisor runs for {self.settings.paths.root}: nothing to stop, checking for strays"
        # Before the scheduler stops: the autoscaler must never start workers while hibernating.
        grace = self.settings.stop_grace_s + 30.0
        note = local_autoscaler.stop(self.ecs, self.settings.paths, timeout_s=grace)
        return f"supervisor runs for {self.settings.paths.root}; {note}"

    def stop_workers(self) -> str:
        """The workers, then Flower when it runs (AFCTL_FLOWER), as the AWS machine's AddOnServices."""
        note = self.stop_service(WORKER_SERVICE)
        if self.running and any(s.name == FLOWER_SERVICE for s in self.ecs.describe()):
            note += "; " + self.stop_service(FLOWER_SERVICE)
        return note

    def stop_service(self, service: str) -> str:
        if not self.running:
            return "not running"
        self.ecs.set_desired_count(service, 0)
        timeout = self.settings.stop_grace_s + 30.0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = next((s for s in self.ecs.describe() if s.name == service), None)
            if state is None or (state.running == 0 and state.stopping == 0):
                return f"{service} desired 0, no process left"
            time.sleep(0.3)
        raise ControlPlaneError(
            f"{service} still has processes {timeout:.0f} s after its desired count went to 0"
        )

    def drain_tasks(self) -> str:
        if not self.running:
            return "not running"
        timeout = self.settings.drain_timeout_s if self.drain_timeout_s is None else self.drain_timeout_s
        started = time.monotonic()
        last_note = started
        while True:
            count = None if self.force else self._active_tasks()
            decision = decide_drain(count, time.monotonic() - started, timeout, self.force)
            if decision.proceed:
                return decision.reason
            if decision.give_up:
                raise ControlPlaneError(f"hibernate stopped before the workers: {decision.reason}")
            if time.monotonic() - last_note >= PROGRESS_EVERY_S:
                self.echo(f"  drain: {decision.reason}")  # a long wait says what it waits for
                last_note = time.monotonic()
            time.sleep(2.0)

    def _active_tasks(self) -> int | None:
        if not self.state.database_url:
            return None
        try:
            return metadata_db.active_task_count(backing.PostgresTarget.parse(self.state.database_url))
        except Exception:  # unreachable DB: unknown count, decide_drain waits and then refuses
            return None

    def announce_hibernated(self) -> str:
        paths = self.settings.paths
        notes = []
        if self.running:
            self.ecs.shutdown(timeout_s=self.settings.stop_grace_s + 30.0)
            notes.append("supervisor stopped")
        strays = sweep_strays(str(paths.root), grace_s=min(10.0, float(self.settings.stop_grace_s)))
        if strays:
            notes.append(f"stopped {len(strays)} stray process(es): {strays}")
        if self.state.embedded_redis:
            backing.stop_embedded_redis(paths.run / "redis.pid")
            notes.append("embedded Redis stopped")
        if self.state.embedded_postgres:
            backing.stop_embedded_postgres(paths.root / "pgdata")
            notes.append("embedded PostgreSQL stopped (data kept)")
        if self.state.redis_url and not self.state.embedded_redis:
            notes.append(self._release_broker(self.state.redis_url))
        notes.append("metadata database kept (still leased to this state folder); `afctl up` resumes")
        return "; ".join(notes)

    def _release_broker(self, redis_url: str) -> str:
        """A hibernated environment has no worker and no queue: its broker lease is let go, so a
        next `up` elsewhere on this Redis db is not refused (the database stays leased)."""
        target = backing.RedisTarget.parse(redis_url)
        try:
            if lease.read_redis_lease(target) == str(self.settings.paths.root):
                lease.release_redis_marker(target, str(self.settings.paths.root))
                return f"Redis db {target.db} lease released"
        except Exception as exc:
            return f"Redis lease not released ({exc})"
        return f"Redis db {target.db}: no lease of this state folder"


def sweep_strays(state_root: str, *, grace_s: float) -> list[int]:
    """Stop every process still carrying this state folder's marker: TERM, then KILL."""
    strays = proc.marked_processes(STATE_MARKER_ENV, state_root)
    for pid in strays:
        proc.signal_pid(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(proc.is_alive(p) for p in strays) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in strays:
        if proc.is_alive(pid):
            proc.signal_pid(pid, signal.SIGKILL)
    return strays
