"""The local step runners follow the shared order; the step decisions say why."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_control_plane.bringup.drain import ActiveTaskInstances, decide_drain, polls_in_window
from airflow_control_plane.bringup.input import AdminUserMode
from airflow_control_plane.bringup.jobs import JobDecision, decide_admin, decide_migration
from airflow_control_plane.bringup.steps import BRING_UP_ORDER, HIBERNATE_ORDER
from airflow_control_plane.errors import ControlPlaneError, TransientError
from airflow_control_plane.health import evaluate_health, wait_until_healthy
from airflow_control_plane.local.bringup import BringUp, fail_if_crash_looping, wait_until_steady
from airflow_control_plane.local.ecs import InMemoryServices
from airflow_control_plane.local.hibernate import Hibernate
from airflow_control_plane.local.protocol import ServiceState
from airflow_control_plane.local.settings import LocalSettings
from tests.conftest import FakeClock

pytestmark = pytest.mark.unit

_BRING_UP_METHODS = [s.value for s in BRING_UP_ORDER]


def _recording(runner: BringUp, monkeypatch: pytest.MonkeyPatch, fail_at: str | None = None) -> list[str]:
    """Replace every step of ``runner`` with one that records it ran (and maybe fails)."""
    called: list[str] = []
    for name in _BRING_UP_METHODS:

        def step(*context: object, name: str = name) -> tuple[object, str]:
            called.append(name)
            if name == fail_at:
                raise ControlPlaneError(f"{name} failed")
            return (context[0] if context else "a context"), "ok"

        monkeypatch.setattr(runner, name, step)
    return called


@pytest.fixture
def settings(tmp_path: Path) -> LocalSettings:
    return LocalSettings.from_env({"AFCTL_STATE_DIR": str(tmp_path)})


def test_up_runs_the_steps_in_the_shared_order_and_times_each(
    settings: LocalSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a bring-up whose steps only record that they ran
    lines: list[str] = []
    runner = BringUp(settings, lines.append)
    called = _recording(runner, monkeypatch)
    # WHEN it runs
    reporter = runner.run()
    # THEN the steps ran in BRING_UP_ORDER, each reported with its duration
    assert called == _BRING_UP_METHODS
    assert [t.step for t in reporter.timings] == _BRING_UP_METHODS
    assert lines[1].startswith("[1/8] validate_input done in ")


def test_no_service_starts_after_a_failed_migration(
    settings: LocalSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a bring-up whose migration fails
    lines: list[str] = []
    runner = BringUp(settings, lines.append)
    called = _recording(runner, monkeypatch, fail_at="migrate_database")
    # WHEN it runs
    with pytest.raises(ControlPlaneError, match="migrate_database failed"):
        runner.run()
    # THEN it stops there: no admin user, no service started
    assert called == ["validate_input", "migrate_database"]
    assert "FAILED" in lines[-1]


def test_down_runs_the_hibernate_steps_in_the_shared_order(settings: LocalSettings) -> None:
    # GIVEN nothing runs for this state folder
    lines: list[str] = []
    # WHEN down runs
    reporter = Hibernate(settings, lines.append, force=True).run()
    # THEN every hibernate step is reported in order, and there was nothing to stop
    assert [t.step for t in reporter.timings] == [s.value for s in HIBERNATE_ORDER]
    assert "no supervisor runs" in reporter.timings[0].detail


def test_migration_is_skipped_only_for_the_same_database_revision_and_version() -> None:
    record = {"revision": "abc", "airflow_version": "3.3.2", "database": "pg/db"}
    assert not decide_migration(record, "abc", "3.3.2", "pg/db").run
    assert decide_migration(record, "abd", "3.3.2", "pg/db").run
    assert decide_migration(record, "abc", "3.3.3", "pg/db").run
    assert decide_migration(record, "abc", "3.3.2", "pg/other").run
    assert decide_migration(None, "abc", "3.3.2", "pg/db").run
    fresh = decide_migration(record, None, "3.3.2", "pg/db")
    assert fresh.run
    assert "no Airflow schema" in fresh.reason
    assert decide_migration(record, "abc", "unknown", "pg/db").run  # in doubt, migrate


def _admin(password_stored: bool, user_exists: bool | None) -> JobDecision:
    return decide_admin(
        AdminUserMode.CREATE, "admin", user_exists=bool(user_exists), password_stored=password_stored
    )


def test_admin_user_decision() -> None:
    assert not _admin(True, True).run
    reset = _admin(False, True)
    assert reset.run
    assert "reset" in reset.reason
    assert _admin(False, None).run
    assert _admin(True, False).run  # stored, but the database is new


def test_drain_never_stops_running_work_unless_forced() -> None:
    # `afctl down` turns its window (300 s, a count every 2 s) into polls: 151, the first at once
    polls = polls_in_window(300.0, 2.0)
    assert decide_drain(ActiveTaskInstances(0, 0), attempt=1, max_polls=polls, force=False).proceed
    waiting = decide_drain(ActiveTaskInstances(3, 0), attempt=6, max_polls=polls, force=False)
    assert not waiting.proceed
    assert not waiting.give_up
    assert "3 task instance(s)" in waiting.reason
    timed_out = decide_drain(ActiveTaskInstances(3, 0), attempt=polls, max_polls=polls, force=False)
    assert not timed_out.proceed
    assert timed_out.give_up
    assert "--force" in timed_out.reason
    unknown = decide_drain(None, attempt=polls, max_polls=polls, force=False)
    assert unknown.give_up
    assert "unknown" in unknown.reason
    assert decide_drain(None, attempt=1, max_polls=1, force=True).proceed  # --force: a one-poll window


HEALTHY = {
    "metadatabase": {"status": "healthy"},
    "scheduler": {"status": "healthy", "latest_scheduler_heartbeat": "x"},
    "triggerer": {"status": "healthy", "latest_triggerer_heartbeat": "x"},
    "dag_processor": {"status": "healthy", "latest_dag_processor_heartbeat": "x"},
}


def test_health_is_healthy_only_when_every_component_is() -> None:
    assert evaluate_health(HEALTHY).healthy
    partial = evaluate_health({**HEALTHY, "triggerer": {"status": None}})
    assert not partial.healthy
    assert partial.unhealthy == ("triggerer",)
    assert not evaluate_health({k: v for k, v in HEALTHY.items() if k != "dag_processor"}).healthy
    assert not evaluate_health(None).healthy
    assert not evaluate_health(["unexpected"]).healthy


def test_the_health_gate_is_bounded_and_names_what_is_unhealthy() -> None:
    clock = FakeClock()
    answers = iter([None, {**HEALTHY, "scheduler": {"status": "unhealthy"}}, HEALTHY])
    assert wait_until_healthy(lambda: next(answers), 60, clock=clock, sleep=clock.sleep).healthy
    with pytest.raises(TransientError, match=r"scheduler=unhealthy"):
        wait_until_healthy(
            lambda: {**HEALTHY, "scheduler": {"status": "unhealthy"}}, 10, clock=clock, sleep=clock.sleep
        )


def test_a_long_health_wait_says_what_it_waits_for() -> None:
    # GIVEN an api-server that answers healthy only after 25 s
    clock = FakeClock()
    notes: list[str] = []

    def fetch() -> object:
        return HEALTHY if clock.now >= 25 else {**HEALTHY, "triggerer": {"status": "unhealthy"}}

    # WHEN the gate waits / THEN it reports every 10 s, naming the unhealthy component
    assert wait_until_healthy(fetch, 60, clock=clock, sleep=clock.sleep, progress=notes.append).healthy
    assert len(notes) == 2
    assert all("triggerer=unhealthy" in note for note in notes)


class _NeverSteady(InMemoryServices):
    def describe(self) -> list[ServiceState]:
        return [
            ServiceState(s.name, s.desired, 0, 0, (), 4, 1, False) if s.name == "scheduler" else s
            for s in super().describe()
        ]


def test_waiting_for_steady_services_is_bounded_and_names_the_service() -> None:
    clock = FakeClock()
    services = _NeverSteady(("api-server", "scheduler"))
    services.set_desired_count("api-server", 1)
    services.set_desired_count("scheduler", 1)
    with pytest.raises(TransientError, match=r"scheduler: desired 1, running 0, restarts 4") as failure:
        wait_until_steady(services, ("api-server", "scheduler"), 30, "/logs", clock=clock, sleep=clock.sleep)
    assert "api-server" not in str(failure.value)
    assert clock.now >= 30


class _CrashLooping(InMemoryServices):
    def describe(self) -> list[ServiceState]:
        return [
            ServiceState(s.name, s.desired, 0, 1, (), 3, 1, False) if s.name == "triggerer" else s
            for s in super().describe()
        ]


def test_the_health_gate_stops_early_when_a_service_keeps_crashing() -> None:
    # GIVEN a triggerer restarted three times (say, a bad setting)
    services = _CrashLooping(("api-server", "triggerer"))
    # WHEN the crash-loop check runs during the health gate
    # THEN it fails at once, naming the service, its exit code and its log
    with pytest.raises(ControlPlaneError, match=r"triggerer keeps crashing \(3 restarts, last exit code 1\)"):
        fail_if_crash_looping(services, ("api-server", "triggerer"), "/state/logs")
    fail_if_crash_looping(
        InMemoryServices(("api-server",)), ("api-server",), "/state/logs"
    )  # healthy: no error


def test_a_malformed_service_state_from_the_supervisor_is_an_error() -> None:
    with pytest.raises(ControlPlaneError, match="malformed service state"):
        ServiceState.from_json({"name": "scheduler", "desired": "x"})
    state = ServiceState("worker", 2, 1, 1, (10,), 0, None, False, ("worker[1]: waiting",))
    assert ServiceState.from_json(state.to_json()) == state
