"""``afctl down``: the hibernate steps of HIBERNATE_ORDER, run locally and timed.

Same order as the AWS state machine: stop the scheduler first (nothing new gets queued),
drain (bounded; ``--force`` skips it), then workers, triggerer, dag-processor, api-server to
zero. The metadata database stays intact, so a later ``up`` resumes. Finally the supervisor
exits and any stray process of this state folder is stopped: nothing is left behind.

The drain is the drain-check Lambda's: the same counter and decision (bringup/drain.py),
polled in-process. Each step takes a :class:`DownContext` and returns it.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from airflow_control_plane.bringup.drain import (
    ActiveTaskInstances,
    DrainAction,
    DrainDecision,
    PostgresTaskInstanceCounter,
    decide_drain,
    polls_in_window,
)
from airflow_control_plane.bringup.steps import HIBERNATE_ORDER, HibernateStep
from airflow_control_plane.errors import ControlPlaneError, TransientError
from airflow_control_plane.local import autoscaler as local_autoscaler
from airflow_control_plane.local import backing, lease, proc
from airflow_control_plane.local.airflow_env import FLOWER_SERVICE, STATE_MARKER_ENV, WORKER_SERVICE
from airflow_control_plane.local.ecs import LocalEcs
from airflow_control_plane.local.runtime_state import RuntimeState
from airflow_control_plane.local.settings import LocalSettings
from airflow_control_plane.local.step_report import StepReporter
from airflow_control_plane.poll import PollTimedOut, poll_done, poll_until

_STOP_STEPS: dict[HibernateStep, str] = {
    HibernateStep.STOP_SCHEDULER: "scheduler",
    HibernateStep.STOP_TRIGGERER: "triggerer",
    HibernateStep.STOP_DAG_PROCESSOR: "dag-processor",
    HibernateStep.STOP_API_SERVER: "api-server",
}


PROGRESS_EVERY_S = 10.0
DRAIN_POLL_S = 2.0  # the local drain window is counted in polls this far apart (bringup/drain.py)


@dataclass(frozen=True)
class DownContext:
    """What the hibernate steps know, handed from one step to the next (never mutated)."""

    state: RuntimeState
    running: bool  # a supervisor runs for this state folder


@dataclass
class Hibernate:
    settings: LocalSettings
    echo: Callable[[str], None]
    force: bool = False
    drain_timeout_s: float | None = None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    # The drain check's counter on the recorded database (a test passes its own).
    task_counter: Callable[[RuntimeState], Callable[[], ActiveTaskInstances | None]] | None = None

    def run(self) -> StepReporter:
        reporter = StepReporter(self.echo, len(HIBERNATE_ORDER))
        ecs = LocalEcs(self.settings.paths)
        context = DownContext(RuntimeState(), running=False)

        def step(action: Callable[[DownContext], tuple[DownContext, str]]) -> Callable[[], str]:
            def act() -> str:
                nonlocal context
                context, detail = action(context)
                return detail

            return act

        for name in HIBERNATE_ORDER:
            if name is HibernateStep.VALIDATE_INPUT:
                reporter.run(name, step(lambda ctx: self.validate_input(ctx, ecs)))
            elif name is HibernateStep.DRAIN_TASKS:
                reporter.run(name, step(self.drain_tasks))
            elif name is HibernateStep.ANNOUNCE_HIBERNATED:
                reporter.run(name, step(lambda ctx: self.announce_hibernated(ctx, ecs)))
            elif name is HibernateStep.STOP_WORKERS:
                reporter.run(name, step(lambda ctx: self.stop_workers(ctx, ecs)))
            else:
                service = _STOP_STEPS[name]
                reporter.run(name, step(lambda ctx, service=service: self.stop_service(ctx, ecs, service)))  # type: ignore[misc]
        return reporter

    def validate_input(self, context: DownContext, ecs: LocalEcs) -> tuple[DownContext, str]:
        if self.drain_timeout_s is not None and self.drain_timeout_s < 0:
            raise ControlPlaneError("--drain-timeout must be >= 0")
        paths = self.settings.paths
        running = paths.root.is_dir() and ecs.is_running()
        context = replace(context, state=RuntimeState.load(paths), running=running)
        if not running:
            return context, f"no supervisor runs for {paths.root}: nothing to stop, checking for strays"
        # Before the scheduler stops: the autoscaler must never start workers while hibernating.
        grace = self.settings.stop_grace_s + 30.0
        note = local_autoscaler.stop(ecs, paths, timeout_s=grace)
        return context, f"supervisor runs for {paths.root}; {note}"

    def stop_workers(self, context: DownContext, ecs: LocalEcs) -> tuple[DownContext, str]:
        """The workers, then Flower when it runs (AFCTL_FLOWER), as the AWS machine's AddOnServices."""
        context, note = self.stop_service(context, ecs, WORKER_SERVICE)
        if context.running and any(s.name == FLOWER_SERVICE for s in ecs.describe()):
            context, flower_note = self.stop_service(context, ecs, FLOWER_SERVICE)
            note += "; " + flower_note
        return context, note

    def stop_service(self, context: DownContext, ecs: LocalEcs, service: str) -> tuple[DownContext, str]:
        if not context.running:
            return context, "not running"
        ecs.set_desired_count(service, 0)
        timeout = self.settings.stop_grace_s + 30.0

        def stopped() -> bool:
            state = next((s for s in ecs.describe() if s.name == service), None)
            return state is None or (state.running == 0 and state.stopping == 0)

        try:
            poll_until(
                stopped,
                timeout_s=timeout,
                interval_s=0.3,
                what=f"{service} stopped",
                clock=self.clock,
                sleep=self.sleep,
            )
        except PollTimedOut:
            raise ControlPlaneError(
                f"{service} still has processes {timeout:.0f} s after its desired count went to 0"
            ) from None
        return context, f"{service} desired 0, no process left"

    def drain_tasks(self, context: DownContext) -> tuple[DownContext, str]:
        """The drain check's loop, in-process: the same counter and decision as the Lambda.

        The window (``--drain-timeout``, else AFCTL_DRAIN_TIMEOUT_S) becomes a number of polls;
        ``--force`` is a window of one poll. A count that fails (database unreachable) is
        unknown: it waits, and at the end of the window stops nothing unless forced."""
        if not context.running:
            return context, "not running"
        window = self.settings.drain_timeout_s if self.drain_timeout_s is None else self.drain_timeout_s
        max_polls = 1 if self.force else polls_in_window(window, DRAIN_POLL_S)
        count = (self.task_counter or _task_counter)(context.state)
        attempt = 0
        last_counts: ActiveTaskInstances | None = None
        last_note = self.clock()

        def decided() -> DrainDecision | None:
            nonlocal attempt, last_counts, last_note
            attempt += 1
            last_counts = count()
            decision = decide_drain(last_counts, attempt=attempt, max_polls=max_polls, force=self.force)
            if decision.action is not DrainAction.WAIT:
                return decision
            if self.clock() - last_note >= PROGRESS_EVERY_S:
                self.echo(f"  drain: {decision.reason}")  # a long wait says what it waits for
                last_note = self.clock()
            return None

        try:
            decision = poll_until(
                decided,
                timeout_s=window,
                interval_s=DRAIN_POLL_S,
                what="drain",
                clock=self.clock,
                sleep=self.sleep,
            )
        except PollTimedOut:  # slow counts used the window up before its last poll: that was the last
            decision = decide_drain(last_counts, attempt=max_polls, max_polls=max_polls, force=self.force)
        if decision.give_up:
            raise ControlPlaneError(f"hibernate stopped before the workers: {decision.reason}")
        return context, decision.reason

    def announce_hibernated(self, context: DownContext, ecs: LocalEcs) -> tuple[DownContext, str]:
        paths = self.settings.paths
        state = context.state
        notes = []
        if context.running:
            ecs.shutdown(timeout_s=self.settings.stop_grace_s + 30.0)
            notes.append("supervisor stopped")
        strays = sweep_strays(str(paths.root), grace_s=min(10.0, float(self.settings.stop_grace_s)))
        if strays:
            notes.append(f"stopped {len(strays)} stray process(es): {strays}")
        if state.embedded_redis:
            backing.stop_embedded_redis(paths.run / "redis.pid")
            notes.append("embedded Redis stopped")
        if state.embedded_postgres:
            backing.stop_embedded_postgres(paths.root / "pgdata")
            notes.append("embedded PostgreSQL stopped (data kept)")
        if state.redis_url and not state.embedded_redis:
            notes.append(self._release_broker(state.redis_url))
        notes.append("metadata database kept (still leased to this state folder); `afctl up` resumes")
        return context, "; ".join(notes)

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


def _task_counter(state: RuntimeState) -> Callable[[], ActiveTaskInstances | None]:
    """The drain check's counter on this environment's database; None when it cannot count."""
    if not state.database_url:
        return lambda: None
    counter = PostgresTaskInstanceCounter(backing.PostgresTarget.parse(state.database_url).connect)

    def count() -> ActiveTaskInstances | None:
        try:
            return counter.count_active()
        except TransientError:  # unreachable DB: unknown count, decide_drain waits and then refuses
            return None

    return count


def sweep_strays(state_root: str, *, grace_s: float) -> list[int]:
    """Stop every process still carrying this state folder's marker: TERM, then KILL."""
    strays = proc.marked_processes(STATE_MARKER_ENV, state_root)
    for pid in strays:
        proc.signal_pid(pid, signal.SIGTERM)
    poll_done(  # what is still alive then is killed below
        lambda: not any(proc.is_alive(p) for p in strays),
        timeout_s=grace_s,
        interval_s=0.2,
    )
    for pid in strays:
        if proc.is_alive(pid):
            proc.signal_pid(pid, signal.SIGKILL)
    return strays
