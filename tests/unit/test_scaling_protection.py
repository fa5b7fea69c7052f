"""Worker-side scale-in protection: the pure decision and the keeper loop with a fake agent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from airflow_control_plane.errors import InvalidInputError, TransientError
from airflow_control_plane.scaling.protection import (
    AgentProtectionClient,
    ProtectionAction,
    ProtectionKeeper,
    ProtectionState,
    decide_protection,
    install_celery_hooks,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


LATER = NOW + timedelta(minutes=50)


@pytest.mark.parametrize(
    ("busy", "consuming", "state", "action"),
    [
        (1, True, ProtectionState(False), ProtectionAction.PROTECT),
        (0, True, ProtectionState(False), ProtectionAction.PROTECT),  # from the start, idle or not
        (3, True, ProtectionState(True, LATER), ProtectionAction.NONE),
        (3, True, ProtectionState(True, NOW + timedelta(minutes=10)), ProtectionAction.PROTECT),
        (0, True, ProtectionState(True, NOW + timedelta(minutes=10)), ProtectionAction.PROTECT),
        (1, True, ProtectionState(True, None), ProtectionAction.PROTECT),
        (0, True, ProtectionState(True, LATER), ProtectionAction.NONE),  # idle: never releases itself
        (0, False, ProtectionState(False), ProtectionAction.NONE),  # drained and released: left alone
        (0, False, ProtectionState(True, LATER), ProtectionAction.NONE),
        (1, False, ProtectionState(False), ProtectionAction.PROTECT),  # a task reached it anyway
    ],
)
def test_decide_protection(
    busy: int, consuming: bool, state: ProtectionState, action: ProtectionAction
) -> None:
    decision = decide_protection(
        busy, state, NOW, consuming=consuming, expires_minutes=60, renew_before=timedelta(minutes=20)
    )
    assert decision.action is action
    assert decision.reason


def test_expiry_outside_the_ecs_range_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match=r"1\.\.2880"):
        decide_protection(1, ProtectionState(False), NOW, expires_minutes=3000)


class FakeAgent(AgentProtectionClient):
    def __init__(self) -> None:
        super().__init__("http://169.254.170.2/api/task")
        self.state = ProtectionState(False)
        self.calls: list[str] = []
        self.fail_get = False

    def get(self) -> ProtectionState:
        if self.fail_get:
            raise TransientError("agent unreachable")
        return self.state

    def protect(self, expires_minutes: int = 60) -> ProtectionState:
        self.calls.append(f"protect {expires_minutes}")
        self.state = ProtectionState(True, NOW + timedelta(minutes=expires_minutes))
        return self.state

    def release(self) -> ProtectionState:
        self.calls.append("release")
        self.state = ProtectionState(False)
        return self.state


def test_keeper_protects_from_start_and_leaves_a_drained_worker_to_the_scaler() -> None:
    # GIVEN a worker that starts idle, runs two tasks, then is drained by the scaler
    agent = FakeAgent()
    busy = [0]
    consuming = [True]
    keeper = ProtectionKeeper(
        agent, lambda: busy[0], consuming=lambda: consuming[0], clock=lambda: NOW, expires_minutes=60
    )
    # WHEN the keeper ticks: idle at start, busy, idle again, then after cancel_consumer and
    # the scaler's release, then with its consumer added back
    actions = [keeper.tick().action]
    busy[0] = 2
    actions.append(keeper.tick().action)
    busy[0] = 0
    actions.append(keeper.tick().action)
    consuming[0] = False
    agent.state = ProtectionState(False)  # the scaler's UpdateTaskProtection(false)
    actions.append(keeper.tick().action)
    consuming[0] = True
    actions.append(keeper.tick().action)
    # THEN it protects at start, keeps it while busy and idle, never releases itself, does not
    # take back a release while drained, and protects again once consuming
    assert actions == [
        ProtectionAction.PROTECT,
        ProtectionAction.NONE,
        ProtectionAction.NONE,
        ProtectionAction.NONE,
        ProtectionAction.PROTECT,
    ]
    assert agent.calls == ["protect 60", "protect 60"]


def test_keeper_still_protects_when_the_state_read_fails() -> None:
    agent = FakeAgent()
    agent.fail_get = True
    keeper = ProtectionKeeper(agent, lambda: 1, clock=lambda: NOW)
    assert keeper.tick().action is ProtectionAction.PROTECT


def test_hooks_are_a_no_op_outside_ecs() -> None:
    assert install_celery_hooks({}) is False


def test_agent_uri_must_be_http() -> None:
    with pytest.raises(InvalidInputError, match="ECS_AGENT_URI"):
        AgentProtectionClient("file:///etc/passwd")
