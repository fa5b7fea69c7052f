"""The local autoscaler's pure parts: slot indices, busy-worker protection, settings, start/stop."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_control_plane.errors import ConfigError, InvalidInputError
from airflow_control_plane.local import autoscaler
from airflow_control_plane.local.ecs import InMemoryServices
from airflow_control_plane.local.paths import StatePaths
from airflow_control_plane.local.settings import LocalSettings
from airflow_control_plane.local.worker_services import LocalWorkerServices
from airflow_control_plane.scaling.broker import BrokerDepth
from airflow_control_plane.scaling.demand import DueDagRun, TaskCounts
from airflow_control_plane.scaling.drain import InMemoryWorkerControl
from airflow_control_plane.scaling.events import RecordingPublisher
from airflow_control_plane.scaling.hibernation import FileFlag
from airflow_control_plane.scaling.memory import InMemoryStore
from airflow_control_plane.scaling.policy import Action
from airflow_control_plane.scaling.service import ScalingPorts, evaluate

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


# --- the adapter over the in-memory supervisor ----------------------------------------------------


def _adapter(workers: int = 2) -> tuple[LocalWorkerServices, InMemoryServices]:
    ecs = InMemoryServices(("worker",))
    ecs.set_desired_count("worker", workers)
    return LocalWorkerServices(ecs), ecs


def test_adapter_describes_and_sets_the_local_worker_service() -> None:
    # GIVEN two local workers WHEN described and lowered THEN the supervisor gets the count
    adapter, _ = _adapter()
    assert adapter.describe("worker").desired == 2
    assert adapter.describe("worker").running == 2
    adapter.set_desired("worker", 1)
    assert adapter.describe("worker").desired == 1
    with pytest.raises(ConfigError):
        adapter.describe("nope")


def test_adapter_releases_protection_by_slot_index() -> None:
    # GIVEN three workers, all protected from their start
    adapter, _ = _adapter(3)
    assert adapter.unprotected("worker") == set()
    # WHEN the drain releases worker-2 (its hostname worker-2@host)
    assert adapter.release("worker", ["2"]) == {"2"}
    # THEN the supervisor reports it unprotected
    assert adapter.unprotected("worker") == {"2"}
    with pytest.raises(InvalidInputError, match="slot indices"):
        adapter.release("worker", ["abc"])


# --- one evaluation through the shared service, local adapters over fakes ------------------------


class FixedDemand:
    def __init__(self, counts: dict[str, TaskCounts]) -> None:
        self.counts = counts

    def task_counts(self) -> dict[str, TaskCounts]:
        return self.counts

    def due_dag_runs(self, now: datetime, horizon: timedelta) -> list[Any]:
        return []


class FixedBroker:
    def __init__(self, waiting: int) -> None:
        self.n = waiting

    def waiting(self, queue: str) -> int:
        return self.n


def _ports(
    tmp_path: Path,
    adapter: LocalWorkerServices,
    counts: dict[str, TaskCounts],
    waiting: int,
    busy: dict[str, int] | None = None,
) -> ScalingPorts:
    broker: BrokerDepth = FixedBroker(waiting)
    return ScalingPorts(
        FixedDemand(counts),
        broker,
        adapter,
        InMemoryStore(),
        FileFlag(tmp_path / "hibernated"),
        RecordingPublisher(),
        control=InMemoryWorkerControl(busy or {}),
        interval_s=5.0,
        settle_s=0.0,
    )


def _settings(tmp_path: Path, **overrides: Any) -> autoscaler.AutoscalerSettings:
    values: dict[str, Any] = {
        "state_dir": tmp_path,
        "interval_s": 5.0,
        "idle_s": 20,
        "min_workers": 0,
        "max_workers": 3,
        "concurrency": 4,
    }
    values.update(overrides)
    return autoscaler.AutoscalerSettings(**values)


def test_queued_tasks_scale_zero_workers_up_at_once(tmp_path: Path) -> None:
    # GIVEN no worker and 12 queued tasks
    adapter, _ = _adapter(0)
    ports = _ports(tmp_path, adapter, {"default": TaskCounts(queued=12)}, 12)
    # WHEN evaluated
    run = evaluate([_settings(tmp_path).scaling], ports, T0)
    # THEN three workers are asked for
    decision = run.outcomes[0].decision
    assert (decision.action, decision.target) == (Action.SCALE_UP, 3)
    assert adapter.describe("worker").desired == 3


class DueDemand(FixedDemand):
    def __init__(self, due: list[DueDagRun]) -> None:
        super().__init__({})
        self.due = due

    def due_dag_runs(self, now: datetime, horizon: timedelta) -> list[Any]:
        return [run for run in self.due if run.due_at <= now + horizon]


def test_prewarm_starts_a_worker_for_a_scheduled_run_before_it_is_due(tmp_path: Path) -> None:
    # GIVEN no worker, nothing queued, and a DAG run due on the default queue in 60 s
    adapter, _ = _adapter(0)
    due = [DueDagRun("nightly", T0 + timedelta(seconds=60), frozenset({"default"}))]
    ports = replace(_ports(tmp_path, adapter, {}, 0), demand=DueDemand(due))
    # WHEN evaluated without pre-warm THEN nothing starts
    assert evaluate([_settings(tmp_path).scaling], ports, T0).outcomes[0].decision.action is Action.HOLD
    # WHEN evaluated with a 90 s lead (AFCTL_AUTOSCALE_PREWARM_SECONDS) THEN one worker starts now
    scaling = _settings(tmp_path, prewarm_s=90).scaling
    decision = evaluate([scaling], ports, T0).outcomes[0].decision
    assert (decision.action, decision.target) == (Action.SCALE_UP, 1)
    assert adapter.describe("worker").desired == 1


def test_hibernation_flag_blocks_every_start(tmp_path: Path) -> None:
    # GIVEN the flag `down` sets, and queued tasks
    autoscaler.set_hibernated(StatePaths(tmp_path), True)
    flag = autoscaler.hibernation_flag(StatePaths(tmp_path))
    adapter, _ = _adapter(0)
    ports = _ports(tmp_path, adapter, {"default": TaskCounts(queued=5)}, 5)
    ports = replace(ports, hibernation=FileFlag(flag))
    # WHEN evaluated THEN nothing starts
    run = evaluate([_settings(tmp_path).scaling], ports, T0)
    assert run.outcomes[0].decision.action is Action.HOLD
    assert adapter.describe("worker").desired == 0
    # AND `up` clears it
    autoscaler.set_hibernated(StatePaths(tmp_path), False)
    assert not flag.exists()


def test_the_idle_worker_is_drained_and_the_busy_one_kept(tmp_path: Path) -> None:
    # GIVEN two workers, worker-0 running a long task, worker-1 idle, nothing queued
    adapter, ecs = _adapter(2)
    ports = _ports(
        tmp_path, adapter, {"default": TaskCounts(running=1)}, 0, {"worker-0@h": 1, "worker-1@h": 0}
    )
    scaling = _settings(tmp_path).scaling
    first = evaluate([scaling], ports, T0)
    assert first.outcomes[0].decision.action is Action.HOLD  # worker-1's idle clock starts
    # WHEN evaluated after the idle period
    run = evaluate([scaling], ports, T0 + timedelta(seconds=30))
    # THEN worker-1 (slot 1) is drained, released and counted down; worker-0 never
    outcome = run.outcomes[0]
    assert outcome.decision.drain == ("worker-1@h",)
    assert outcome.drain is not None
    assert outcome.drain.released == ("worker-1@h",)
    assert adapter.describe("worker").desired == 1
    assert ecs.released == {"worker": {1}}


def test_a_tick_logs_each_decision_with_its_reason(tmp_path: Path) -> None:
    # GIVEN the state folder and one idle worker
    paths = StatePaths(tmp_path)
    paths.logs.mkdir(parents=True)
    adapter, _ = _adapter(1)
    ports = _ports(tmp_path, adapter, {}, 0, {"worker-0@h": 0})
    # WHEN one tick runs
    records = autoscaler.tick(_settings(tmp_path), ports, adapter, T0)
    # THEN the decision is in the log file, with its reason and the worker's idle clock
    logged = autoscaler.read_decisions(paths)
    assert logged == records
    assert logged[0]["action"] == "hold"
    assert "1 idle" in logged[0]["reason"]
    assert logged[0]["idle_since"] == {"worker-0@h": T0.isoformat()}


def test_malformed_log_lines_are_skipped(tmp_path: Path) -> None:
    # GIVEN a log cut mid-line (the process was stopped while writing)
    paths = StatePaths(tmp_path)
    paths.logs.mkdir(parents=True)
    autoscaler.decisions_log(paths).write_text('{"action": "hold"}\n{"act')
    # WHEN read THEN only whole records come back
    assert autoscaler.read_decisions(paths) == [{"action": "hold"}]


# --- settings and wiring ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"interval_s": 0},
        {"min_workers": 4},
        {"min_workers": -1},
        {"concurrency": 0},
        {"idle_s": -1},
        {"prewarm_s": -1},
    ],
)
def test_bad_autoscaler_settings_fail_loudly(tmp_path: Path, overrides: dict[str, Any]) -> None:
    # GIVEN a bad setting WHEN the settings are built THEN a ConfigError
    with pytest.raises(ConfigError):
        _settings(tmp_path, **overrides)


def test_local_settings_default_to_autoscaling_from_zero(tmp_path: Path) -> None:
    # GIVEN no AFCTL_* autoscaling variables WHEN settings are read THEN min 0, max 3, every 5 s
    s = LocalSettings.from_env({"AFCTL_STATE_DIR": str(tmp_path)})
    assert (s.autoscale, s.workers_min, s.workers_max, s.autoscale_interval_s, s.autoscale_idle_s) == (
        True,
        0,
        3,
        5,
        60,
    )
    # AND with autoscaling off one worker stays up, as before
    off = LocalSettings.from_env({"AFCTL_STATE_DIR": str(tmp_path), "AFCTL_AUTOSCALE": "false"})
    assert (off.autoscale, off.workers_min) == (False, 1)
    # AND pre-warm is off unless set
    assert s.autoscale_prewarm_s == 0
    with pytest.raises(ConfigError):
        LocalSettings.from_env({"AFCTL_STATE_DIR": str(tmp_path), "AFCTL_AUTOSCALE": "maybe"})


def test_spec_runs_the_loop_with_the_settings_of_up(tmp_path: Path) -> None:
    # GIVEN the settings of one `up`
    s = LocalSettings.from_env(
        {
            "AFCTL_STATE_DIR": str(tmp_path),
            "AFCTL_AUTOSCALE_IDLE_SECONDS": "20",
            "AFCTL_AUTOSCALE_PREWARM_SECONDS": "45",
        }
    )
    # WHEN the supervisor spec is built THEN one autoscaler process with those settings
    spec = autoscaler.specs(s)["autoscaler"]
    assert spec.max_count == 1
    argv = list(spec.argv)
    assert argv[1:3] == ["-m", "airflow_control_plane.local.autoscaler"]
    assert argv[argv.index("--idle-seconds") + 1] == "20"
    assert argv[argv.index("--prewarm-seconds") + 1] == "45"
    assert argv[argv.index("--min") + 1] == "0"
    assert argv[argv.index("--state-dir") + 1] == str(s.paths.root)


def test_start_and_stop_order_the_flag_and_the_service(tmp_path: Path) -> None:
    # GIVEN a hibernated state folder and a supervisor knowing the autoscaler
    s = LocalSettings.from_env({"AFCTL_STATE_DIR": str(tmp_path)})
    autoscaler.set_hibernated(s.paths, True)
    ecs = InMemoryServices(("worker", "autoscaler"))
    # WHEN `up` starts it THEN the flag is gone and one autoscaler runs
    assert "autoscaler started" in autoscaler.start(ecs, s)
    assert not autoscaler.hibernation_flag(s.paths).exists()
    assert ecs.desired["autoscaler"] == 1
    # WHEN `down` stops it THEN the flag is set and the autoscaler is at 0
    assert "autoscaler stopped" in autoscaler.stop(ecs, s.paths, timeout_s=5)
    assert autoscaler.hibernation_flag(s.paths).exists()
    assert ecs.desired["autoscaler"] == 0
    # AND with autoscaling off `up` keeps it stopped
    off = LocalSettings.from_env({"AFCTL_STATE_DIR": str(tmp_path), "AFCTL_AUTOSCALE": "false"})
    assert "autoscaling off" in autoscaler.start(ecs, off)
    assert ecs.desired["autoscaler"] == 0


def test_a_second_up_never_lowers_the_workers_the_autoscaler_started(tmp_path: Path) -> None:
    # GIVEN three workers started by the autoscaler
    ecs = InMemoryServices(("worker", "autoscaler"))
    ecs.set_desired_count("worker", 3)
    on = LocalSettings.from_env({"AFCTL_STATE_DIR": str(tmp_path)})
    off = LocalSettings.from_env({"AFCTL_STATE_DIR": str(tmp_path), "AFCTL_AUTOSCALE": "false"})
    # WHEN `up` runs again THEN it keeps them (autoscaling on) or sets the fixed minimum (off)
    assert autoscaler.initial_workers(ecs, on) == 3
    assert autoscaler.initial_workers(ecs, off) == 1
    assert autoscaler.initial_workers(InMemoryServices(("worker",)), on) == 0


def test_the_decision_log_rotates_when_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a decision log over the size limit
    paths = StatePaths(tmp_path)
    paths.logs.mkdir(parents=True)
    autoscaler.decisions_log(paths).write_text('{"old": 1}\n' * 10)
    monkeypatch.setattr(autoscaler, "MAX_LOG_BYTES", 50)
    adapter, _ = _adapter(0)
    # WHEN a tick runs THEN the old log is kept as .1 and the new one holds only the new record
    autoscaler.tick(_settings(tmp_path), _ports(tmp_path, adapter, {}, 0), adapter, T0)
    assert len(autoscaler.read_decisions(paths)) == 1
    assert (paths.logs / "autoscaler.jsonl.1").read_text().count("old") == 10
