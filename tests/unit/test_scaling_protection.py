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


@pytest.mark.parametrize(
    ("busy", "state", "action"),
    [
        (1, ProtectionState(False), ProtectionAction.PROTECT),
        (3, ProtectionState(True, NOW + timedelta(minutes=50)), ProtectionAction.NONE),
        (3, ProtectionState(True, NOW + timedelta(minutes=10)), ProtectionAction.PROTECT),
        (1, ProtectionState(True, None), ProtectionAction.PROTECT),
        (0, ProtectionState(True, NOW + timedelta(minutes=50)), ProtectionAction.RELEASE),
        (0, ProtectionState(False), ProtectionAction.NONE),
    ],
)
def test_decide_protection(busy: int, state: ProtectionState, action: ProtectionAction) -> None:
    decision = decide_protection(busy, state, NOW, expires_minutes=60, renew_before=timedelta(minutes=20))
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


def test_keeper_protects_while_busy_and_releases_when_idle() -> None:
    # GIVEN a worker that runs two tasks, then none
    agent = FakeAgent()
    busy = [2]
    keeper = ProtectionKeeper(agent, lambda: busy[0], clock=lambda: NOW, expires_minutes=60)
    # WHEN the keeper ticks while busy, then after the tasks finish
    first = keeper.tick()
    second = keeper.tick()
    busy[0] = 0
    third = keeper.tick()
    # THEN it protects once, keeps it, then releases
    assert [first.action, second.action, third.action] == [
        ProtectionAction.PROTECT,
        ProtectionAction.NONE,
        ProtectionAction.RELEASE,
    ]
    assert agent.calls == ["protect 60", "release"]


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
