"""Bring-up and hibernate input validation, and the bring-up plan (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_control_plane.bringup.drain import ActiveTaskInstances, DrainAction, decide_drain
from airflow_control_plane.bringup.input import (
    AdminUserMode,
    BringUpRequest,
    Polling,
    parse_bring_up,
    parse_hibernate,
)
from airflow_control_plane.bringup.plan import ObservedService, WorkerService, plan_bring_up
from airflow_control_plane.bringup.steps import CORE_SERVICES
from airflow_control_plane.errors import InvalidInputError
from tests.conftest import load_event

pytestmark = pytest.mark.unit

NAMES = {key: f"env-{key}" for key in CORE_SERVICES}
WORKERS = (WorkerService("default", "env-worker-default"), WorkerService("heavy", "env-worker-heavy", 2))


def test_empty_input_gets_the_documented_defaults() -> None:
    # GIVEN nothing WHEN parsed
    request = parse_bring_up({})
    # THEN one of each core service, no workers, admin created if missing, 15 s x 40 settle
    assert request == BringUpRequest()
    assert dict(request.core_counts) == dict.fromkeys(CORE_SERVICES, 1)
    assert request.worker_minimum == 0
    assert request.admin_user.mode is AdminUserMode.CREATE
    assert request.settle == Polling(15, 40)
    assert parse_bring_up(None) == request


def test_sample_events_parse() -> None:
    # GIVEN the sample inputs in events/
    request = parse_bring_up(load_event("bringup.json"))
    # THEN they parse to what they say
    assert request.worker_minimum == 1
    assert request.admin_user.email == "airflow-admin@example.com"
    assert parse_bring_up(load_event("bringup_minimal.json")) == BringUpRequest()
    assert parse_hibernate(load_event("hibernate.json")).drain == Polling(30, 20)
    assert parse_hibernate(load_event("hibernate_force.json")).force is True
    with pytest.raises(InvalidInputError):
        parse_bring_up(load_event("bringup_invalid.json"))


def test_normalised_json_round_trips() -> None:
    # GIVEN a parsed request WHEN turned back into JSON and parsed again THEN nothing changes
    request = parse_bring_up(load_event("bringup.json"))
    assert parse_bring_up(request.to_json()) == request
    hibernate = parse_hibernate(load_event("hibernate_force.json"))
    assert parse_hibernate(hibernate.to_json()) == hibernate


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "must be a JSON object"),
        ({"workrs": {}}, "unknown field(s) ['workrs']"),
        ({"services": {"scheduler": 0}}, "services.scheduler must be between 1 and 10"),
        ({"services": {"scheduler": "2"}}, "services.scheduler must be an integer"),
        ({"services": {"scheduler": True}}, "services.scheduler must be an integer"),
        ({"services": {"webserver": 1}}, "unknown field(s) ['webserver']"),
        ({"workers": {"minimum": 51}}, "workers.minimum must be between 0 and 50"),
        ({"workers": 3}, "workers must be a JSON object"),
        ({"adminUser": {"mode": "delete"}}, "adminUser.mode must be one of"),
        ({"adminUser": {"role": "Root"}}, "adminUser.role must be one of"),
        ({"adminUser": {"username": "a b"}}, "adminUser.username is not acceptable"),
        ({"adminUser": {"username": "$(reboot)"}}, "adminUser.username is not acceptable"),
        ({"adminUser": {"email": "no-at-sign"}}, "adminUser.email is not acceptable"),
        ({"adminUser": {"firstName": 'A"; rm -rf /'}}, "adminUser.firstName is not acceptable"),
        ({"settle": {"pollSeconds": 0}}, "settle.pollSeconds must be between 1 and 300"),
        ({"settle": {"maxPolls": 0}}, "settle.maxPolls must be between 1 and 240"),
        ({"requestedBy": ""}, "requestedBy must be a string"),
    ],
)
def test_bad_bring_up_input_is_named(raw: object, message: str) -> None:
    # GIVEN a bad input WHEN parsed THEN the error names the field
    with pytest.raises(InvalidInputError) as info:
        parse_bring_up(raw)
    assert message in str(info.value)


def test_a_password_in_the_input_is_refused_without_echoing_it() -> None:
    # GIVEN someone passes the admin password in the input
    with pytest.raises(InvalidInputError) as info:
        parse_bring_up({"adminUser": {"password": "hunter2-secret"}})
    # THEN it is refused, and the value is not repeated in the message (it ends up in logs)
    assert "Secrets Manager" in str(info.value)
    assert "hunter2-secret" not in str(info.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"force": "yes"}, "force must be true or false"),
        ({"drain": {"maxPolls": 0}}, "drain.maxPolls must be between 1 and 240"),
        ({"drain": {"pollSeconds": 301}}, "drain.pollSeconds must be between 1 and 300"),
        ({"drain": {"timeout": 3}}, "unknown field(s) ['timeout']"),
    ],
)
def test_bad_hibernate_input_is_named(raw: object, message: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_hibernate(raw)
    assert message in str(info.value)


@given(
    counts=st.fixed_dictionaries({k: st.integers(1, 10) for k in CORE_SERVICES}),
    minimum=st.integers(0, 50),
    observed=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), min_size=6, max_size=6),
)
def test_plan_never_lowers_a_count(
    counts: dict[str, int], minimum: int, observed: list[tuple[int, int]]
) -> None:
    # GIVEN any request and any observed state
    request = parse_bring_up({"services": counts, "workers": {"minimum": minimum}})
    now = {
        name: ObservedService(d, r)
        for name, (d, r) in zip([*NAMES.values(), *(w.service_name for w in WORKERS)], observed, strict=True)
    }
    # WHEN planned
    plan = plan_bring_up(request, NAMES, now, WORKERS)
    # THEN every desired count is at least the current one, the request and the queue's minimum
    for change in (*plan.core, *plan.workers):
        assert change.desired >= change.current
    assert all(c.desired >= counts[c.key] for c in plan.core)
    assert all(w.desired >= max(minimum, spec.minimum) for w, spec in zip(plan.workers, WORKERS, strict=True))


def test_plan_for_a_hibernated_environment_starts_everything() -> None:
    # GIVEN every service at 0
    plan = plan_bring_up(parse_bring_up({"workers": {"minimum": 1}}), NAMES, {}, WORKERS)
    # THEN all four core services and every worker service are raised, and the admin user is created
    assert [c.key for c in plan.core if c.changes] == list(CORE_SERVICES)
    assert [w.desired for w in plan.workers] == [1, 2]
    assert (plan.create_admin_user, plan.already_running) == (True, False)
    assert "raise api-server 0->1" in plan.reason
    assert [u["serviceName"] for u in plan.to_json()["workerUpdates"]] == [
        "env-worker-default",
        "env-worker-heavy",
    ]


def test_plan_for_a_running_environment_changes_nothing() -> None:
    # GIVEN every core service steady and the autoscaler running 4 workers
    running = {NAMES[k]: ObservedService(1, 1) for k in CORE_SERVICES} | {
        "env-worker-default": ObservedService(4, 4),
        "env-worker-heavy": ObservedService(2, 2),
    }
    # WHEN planned with a minimum of 1
    plan = plan_bring_up(parse_bring_up({"workers": {"minimum": 1}}), NAMES, running, WORKERS)
    # THEN nothing changes, the admin user is not touched, and the reason says why
    assert plan.already_running is True
    assert plan.to_json()["coreUpdates"] == []
    assert ([w.desired for w in plan.workers], plan.to_json()["workerUpdates"]) == ([4, 2], [])
    assert plan.create_admin_user is False
    assert "worker:default at 4" in plan.reason


def test_plan_update_mode_resets_the_admin_even_when_running() -> None:
    running = {NAMES[k]: ObservedService(1, 1) for k in CORE_SERVICES}
    plan = plan_bring_up(parse_bring_up({"adminUser": {"mode": "update"}}), NAMES, running, WORKERS)
    assert plan.create_admin_user is True


def test_plan_skip_mode_never_creates_the_admin() -> None:
    plan = plan_bring_up(parse_bring_up({"adminUser": {"mode": "skip"}}), NAMES, {}, WORKERS)
    assert plan.create_admin_user is False
    assert "skipped" in plan.reason


def test_plan_a_half_running_environment_is_not_already_running() -> None:
    # GIVEN the scheduler desired 1 but not running yet
    observed = {NAMES[k]: ObservedService(1, 1) for k in CORE_SERVICES} | {
        NAMES["scheduler"]: ObservedService(1, 0)
    }
    plan = plan_bring_up(BringUpRequest(), NAMES, observed, WORKERS)
    assert plan.already_running is False
    assert plan.create_admin_user is True


def test_plan_without_a_service_name_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="scheduler"):
        plan_bring_up(BringUpRequest(), {k: v for k, v in NAMES.items() if k != "scheduler"}, {}, WORKERS)
    with pytest.raises(InvalidInputError, match="no worker service"):
        plan_bring_up(BringUpRequest(), NAMES, {}, ())


@pytest.mark.parametrize(
    ("counts", "attempt", "max_polls", "force", "action"),
    [
        (ActiveTaskInstances(0, 0), 1, 3, False, DrainAction.PROCEED),
        (ActiveTaskInstances(1, 0), 1, 3, False, DrainAction.WAIT),
        (ActiveTaskInstances(0, 1), 2, 3, True, DrainAction.WAIT),
        (ActiveTaskInstances(1, 1), 3, 3, False, DrainAction.TIMED_OUT),
        (ActiveTaskInstances(1, 1), 3, 3, True, DrainAction.PROCEED),
        (ActiveTaskInstances(0, 0), 3, 3, False, DrainAction.PROCEED),
    ],
)
def test_drain_decision(
    counts: ActiveTaskInstances, attempt: int, max_polls: int, force: bool, action: DrainAction
) -> None:
    # GIVEN counts at a poll WHEN decided THEN the action follows the table, with a reason
    decision = decide_drain(counts, attempt=attempt, max_polls=max_polls, force=force)
    assert decision.action is action
    assert f"{counts.running} running" in decision.reason or "no running" in decision.reason


def test_drain_decision_refuses_impossible_attempts() -> None:
    with pytest.raises(InvalidInputError):
        decide_drain(ActiveTaskInstances(0, 0), attempt=0, max_polls=3, force=False)


def test_a_wait_window_longer_than_four_hours_is_refused() -> None:
    # GIVEN a settle loop of 300 s x 60 polls (5 h) WHEN parsed THEN refused, naming the limit
    with pytest.raises(InvalidInputError, match="exceeds the 14400 s limit"):
        parse_bring_up({"settle": {"pollSeconds": 300, "maxPolls": 60}})
    with pytest.raises(InvalidInputError, match="drain"):
        parse_hibernate({"drain": {"pollSeconds": 120, "maxPolls": 121}})
