"""The local autoscaler's pure parts: slot indices, busy-worker protection, settings, start/stop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_control_plane.errors import ConfigError, TransientError
from airflow_control_plane.local import autoscaler
from airflow_control_plane.local.ecs import InMemoryServices
from airflow_control_plane.local.paths import StatePaths
from airflow_control_plane.local.settings import LocalSettings
from airflow_control_plane.local.worker_services import (
    LocalWorkerServices,
    WorkerProcess,
    decide_protection,
    owner_of,
    slot_index,
)
from airflow_control_plane.scaling.broker import BrokerDepth
from airflow_control_plane.scaling.demand import TaskCounts
from airflow_control_plane.scaling.events import RecordingPublisher
from airflow_control_plane.scaling.hibernation import FileFlag
from airflow_control_plane.scaling.memory import InMemoryStore
from airflow_control_plane.scaling.policy import Action
from airflow_control_plane.scaling.service import ScalingPorts, evaluate

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


# --- slot index -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "index"),
    [
        (["airflow", "celery", "worker", "--celery-hostname", "worker-0@%h"], 0),
        (["[celeryd: worker-12@host:MainProcess] -active- (celery worker)"], 12),
        (["airflow", "scheduler"], None),
        (["[celeryd: myworker-1@host:MainProcess]"], None),
        (["worker-1@a", "worker-2@b"], None),  # ambiguous: unknown, never a guess
    ],
)
def test_slot_index_reads_the_node_name(argv: list[str], index: int | None) -> None:
    # GIVEN a process command line WHEN its slot is read THEN only an unambiguous index counts
    assert slot_index(argv) == index


# --- which worker runs a task -------------------------------------------------------------------

# worker[0] pid 100 -> pool child 101 -> task 102; worker[1] pid 200 -> 201 -> 202;
# worker[2] pid 300 -> 301 -> 302; all under the supervisor 10.
PARENTS = {100: 10, 101: 100, 102: 101, 200: 10, 201: 200, 202: 201, 300: 10, 301: 300, 302: 301, 10: 1}
WORKERS = [WorkerProcess(0, 100), WorkerProcess(1, 200), WorkerProcess(2, 300)]


def test_owner_walks_up_to_the_worker_process() -> None:
    # GIVEN the process tree WHEN the owner of a task process is looked up THEN its worker slot
    assert owner_of(302, PARENTS, {100: 0, 200: 1, 300: 2}) == 2
    assert owner_of(101, PARENTS, {100: 0, 200: 1, 300: 2}) == 0
    assert owner_of(999, PARENTS, {100: 0}) is None


def test_cyclic_parent_map_ends() -> None:
    # GIVEN a corrupt parent map with a cycle WHEN walked THEN it ends with no owner
    assert owner_of(5, {5: 6, 6: 5}, {100: 0}) is None


@pytest.mark.parametrize(
    ("task_pids", "keep", "busy"),
    [
        ([], 0, ()),  # idle: everything may go
        ([102], 1, (0,)),  # the lowest slot is busy: keep one, two may go
        ([102, 202], 2, (0, 1)),
        ([302], 3, (2,)),  # the highest slot is busy: it would be stopped first, keep all
        ([202, 202], 2, (1,)),
    ],
)
def test_protection_keeps_every_busy_worker_given_highest_slots_stop_first(
    task_pids: list[int], keep: int, busy: tuple[int, ...]
) -> None:
    # GIVEN three workers and the pids of running task instances
    # WHEN the protection is decided
    protection = decide_protection(WORKERS, task_pids, PARENTS)
    # THEN the kept count covers exactly the busy slots
    assert (protection.keep, protection.busy) == (keep, busy)
    assert f"keep the lowest {keep}" in protection.reason


def test_protection_ranks_by_live_slots_not_raw_indices() -> None:
    # GIVEN live slots 0 and 2 (slot 1 gone) and slot 2 busy
    workers = [WorkerProcess(0, 100), WorkerProcess(2, 300)]
    # WHEN decided THEN both must stay (2 is the second live slot), not three
    assert decide_protection(workers, [302], PARENTS).keep == 2


@pytest.mark.parametrize("pids", [[None], [999], [102, 999]])
def test_a_task_under_no_worker_makes_protection_unknown(pids: list[int | None]) -> None:
    # GIVEN a running task instance whose process is under no worker (or has no pid)
    # WHEN decided THEN the count is unknown: an error, so the policy holds
    with pytest.raises(TransientError, match="no local worker"):
        decide_protection(WORKERS, pids, PARENTS)


# --- the adapter over fakes ------------------------------------------------------------------------


class FakeConn:
    def __init__(self, rows: list[list[Any]] | Exception) -> None:
        self.rows = rows
        self.closed = False

    def run(self, sql: str) -> list[list[Any]]:
        assert "state = 'running'" in sql
        if isinstance(self.rows, Exception):
            raise self.rows
        return self.rows

    def close(self) -> None:
        self.closed = True


def _adapter(rows: list[list[Any]] | Exception, workers: int = 2) -> tuple[LocalWorkerServices, FakeConn]:
    ecs = InMemoryServices(("worker",))
    ecs.set_desired_count("worker", workers)  # fake pids 1000, 1001, ...
    conn = FakeConn(rows)
    parents = {1000: 10, 1001: 10, 5000: 1000, 5001: 1001}
    adapter = LocalWorkerServices(
        ecs,
        lambda: conn,
        cmdline=lambda pid: ["airflow", "celery", "worker", "--celery-hostname", f"worker-{pid - 1000}@%h"],
        parent_map=lambda: parents,
    )
    return adapter, conn


def test_adapter_describes_and_sets_the_local_worker_service() -> None:
    # GIVEN two local workers WHEN described and lowered THEN the supervisor gets the count
    adapter, _ = _adapter([])
    assert adapter.describe("worker").desired == 2
    assert adapter.describe("worker").running == 2
    adapter.set_desired("worker", 1)
    assert adapter.describe("worker").desired == 1
    with pytest.raises(ConfigError):
        adapter.describe("nope")


def test_adapter_protects_only_the_busy_lowest_slots() -> None:
    # GIVEN worker[1] runs a task WHEN protection is read THEN both stay (worker[1] stops first)
    adapter, conn = _adapter([[5001]])
    assert adapter.protected_workers("worker") == 2
    assert conn.closed
    # AND when only worker[0] is busy, one may go
    adapter, _ = _adapter([[5000]])
    assert adapter.protected_workers("worker") == 1
    # AND idle workers are not protected at all (never the full running count by default)
    adapter, _ = _adapter([])
    assert adapter.protected_workers("worker") == 0


def test_adapter_database_failure_is_transient() -> None:
    # GIVEN a failing query WHEN protection is read THEN a TransientError (the policy holds)
    adapter, conn = _adapter(RuntimeError("boom"))
    with pytest.raises(TransientError, match="unreadable"):
        adapter.protected_workers("worker")
    assert conn.closed


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
    tmp_path: Path, adapter: LocalWorkerServices, counts: dict[str, TaskCounts], waiting: int
) -> ScalingPorts:
    broker: BrokerDepth = FixedBroker(waiting)
    return ScalingPorts(
        FixedDemand(counts),
        broker,
        adapter,
        InMemoryStore(),
        FileFlag(tmp_path / "hibernated"),
        RecordingPublisher(),
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
    adapter, _ = _adapter([], workers=0)
    ports = _ports(tmp_path, adapter, {"default": TaskCounts(queued=12)}, 12)
    # WHEN evaluated
    run = evaluate([_settings(tmp_path).scaling], ports, T0)
    # THEN three workers are asked for
    decision = run.outcomes[0].decision
    assert (decision.action, decision.target) == (Action.SCALE_UP, 3)
    assert adapter.describe("worker").desired == 3


def test_hibernation_flag_blocks_every_start(tmp_path: Path) -> None:
    # GIVEN the flag `down` sets, and queued tasks
    autoscaler.set_hibernated(StatePaths(tmp_path), True)
    flag = autoscaler.hibernation_flag(StatePaths(tmp_path))
    adapter, _ = _adapter([], workers=0)
    ports = _ports(tmp_path, adapter, {"default": TaskCounts(queued=5)}, 5)
    ports = ScalingPorts(ports.demand, ports.broker, adapter, ports.memory, FileFlag(flag), ports.publisher)
    # WHEN evaluated THEN nothing starts
    run = evaluate([_settings(tmp_path).scaling], ports, T0)
    assert run.outcomes[0].decision.action is Action.HOLD
    assert adapter.describe("worker").desired == 0
    # AND `up` clears it
    autoscaler.set_hibernated(StatePaths(tmp_path), False)
    assert not flag.exists()


@pytest.mark.parametrize(
    ("busy_pid", "action", "target"),
    [(5001, Action.HOLD, 2), (5000, Action.SCALE_DOWN, 1)],
    ids=["highest-slot-busy-keeps-both", "lowest-slot-busy-lets-the-idle-one-go"],
)
def test_a_busy_worker_is_kept_past_the_idle_period(
    tmp_path: Path, busy_pid: int, action: Action, target: int
) -> None:
    # GIVEN two workers, one of them running a long task, nothing queued
    adapter, _ = _adapter([[busy_pid]], workers=2)
    ports = _ports(tmp_path, adapter, {"default": TaskCounts(running=1)}, 0)
    scaling = _settings(tmp_path).scaling
    first = evaluate([scaling], ports, T0)
    assert first.outcomes[0].decision.action is Action.HOLD  # the idle clock starts
    # WHEN evaluated after the idle period
    run = evaluate([scaling], ports, T0 + timedelta(seconds=30))
    # THEN the idle worker may go, but never the busy one (highest slots stop first)
    decision = run.outcomes[0].decision
    assert (decision.action, decision.target) == (action, target)
    assert adapter.describe("worker").desired == target
    if action is Action.HOLD:
        assert "until they finish" in decision.reason


def test_a_tick_logs_each_decision_with_its_reason(tmp_path: Path) -> None:
    # GIVEN the state folder and one idle worker
    paths = StatePaths(tmp_path)
    paths.logs.mkdir(parents=True)
    adapter, _ = _adapter([], workers=1)
    ports = _ports(tmp_path, adapter, {}, 0)
    # WHEN one tick runs
    records = autoscaler.tick(_settings(tmp_path), ports, adapter, T0)
    # THEN the decision is in the log file, with its reason and the protection note
    logged = autoscaler.read_decisions(paths)
    assert logged == records
    assert logged[0]["action"] == "hold"
    assert "idle for 0s of the 20s idle period" in logged[0]["reason"]
    assert logged[0]["protection"].startswith("busy: none of 1")


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
    [{"interval_s": 0}, {"min_workers": 4}, {"min_workers": -1}, {"concurrency": 0}, {"idle_s": -1}],
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
    with pytest.raises(ConfigError):
        LocalSettings.from_env({"AFCTL_STATE_DIR": str(tmp_path), "AFCTL_AUTOSCALE": "maybe"})


def test_spec_runs_the_loop_with_the_settings_of_up(tmp_path: Path) -> None:
    # GIVEN the settings of one `up`
    s = LocalSettings.from_env({"AFCTL_STATE_DIR": str(tmp_path), "AFCTL_AUTOSCALE_IDLE_SECONDS": "20"})
    # WHEN the supervisor spec is built THEN one autoscaler process with those settings
    spec = autoscaler.specs(s)["autoscaler"]
    assert spec.max_count == 1
    argv = list(spec.argv)
    assert argv[1:3] == ["-m", "airflow_control_plane.local.autoscaler"]
    assert argv[argv.index("--idle-seconds") + 1] == "20"
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
    adapter, _ = _adapter([], workers=0)
    # WHEN a tick runs THEN the old log is kept as .1 and the new one holds only the new record
    autoscaler.tick(_settings(tmp_path), _ports(tmp_path, adapter, {}, 0), adapter, T0)
    assert len(autoscaler.read_decisions(paths)) == 1
    assert (paths.logs / "autoscaler.jsonl.1").read_text().count("old") == 10
