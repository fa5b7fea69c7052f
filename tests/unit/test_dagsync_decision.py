"""The publish decision: newer publishes, same is a no-op, older is refused unless a rollback."""

from __future__ import annotations

import pytest

from airflow_control_plane.dagsync.decision import (
    Action,
    Relation,
    RollbackPin,
    SyncInputs,
    decide_sync,
)

pytestmark = pytest.mark.unit

LIVE, NEW, OLD, TIP = "a" * 40, "b" * 40, "c" * 40, "d" * 40


def test_first_sync_publishes() -> None:
    # GIVEN nothing is live WHEN a commit is requested
    decision = decide_sync(SyncInputs(None, NEW, NEW, Relation.UNKNOWN))
    # THEN it is published, and the reason says why
    assert decision.action is Action.PUBLISH
    assert decision.sha == NEW
    assert "no release is live" in decision.reason


def test_the_live_commit_is_a_noop() -> None:
    decision = decide_sync(SyncInputs(LIVE, LIVE, LIVE, Relation.SAME))
    assert decision.action is Action.NOOP
    assert "already live" in decision.reason


def test_a_descendant_of_live_is_published() -> None:
    decision = decide_sync(SyncInputs(LIVE, NEW, NEW, Relation.DESCENDANT))
    assert decision.action is Action.PUBLISH
    assert decision.sha == NEW


def test_an_older_commit_is_refused_and_live_stays() -> None:
    # GIVEN a late trigger for an ancestor of the live commit (out-of-order delivery)
    decision = decide_sync(SyncInputs(LIVE, OLD, LIVE, Relation.ANCESTOR))
    # THEN it is refused, naming the way to do it on purpose
    assert decision.action is Action.REFUSE
    assert decision.sha == LIVE
    assert "rollback" in decision.reason


def test_an_explicit_rollback_publishes_an_older_commit() -> None:
    decision = decide_sync(SyncInputs(LIVE, OLD, LIVE, Relation.ANCESTOR, rollback=True))
    assert decision.action is Action.PUBLISH
    assert decision.sha == OLD
    assert "rollback" in decision.reason


def test_an_unrelated_commit_is_published_only_when_it_is_the_refs_tip() -> None:
    # GIVEN a force-push: the new tip does not descend from live
    forced = decide_sync(SyncInputs(LIVE, TIP, TIP, Relation.UNKNOWN))
    # AND a stale, unrelated commit that is not the tip
    stale = decide_sync(SyncInputs(LIVE, OLD, TIP, Relation.UNKNOWN))
    # THEN the tip is authoritative, the stale commit is refused
    assert forced.action is Action.PUBLISH
    assert stale.action is Action.REFUSE


def test_a_rollback_holds_until_the_ref_moves() -> None:
    pin = RollbackPin(sha=OLD, ref_tip_at_pin=LIVE)
    # GIVEN OLD is live because of a rollback taken while the tip was LIVE
    held = decide_sync(SyncInputs(OLD, LIVE, LIVE, Relation.DESCENDANT, pin=pin))
    # WHEN a new commit lands on the ref
    moved = decide_sync(SyncInputs(OLD, NEW, NEW, Relation.DESCENDANT, pin=pin))
    # THEN the schedule does not undo the rollback, but a new commit is published
    assert held.action is Action.NOOP
    assert "held at rollback" in held.reason
    assert moved.action is Action.PUBLISH
    assert moved.sha == NEW


def test_a_pin_for_a_commit_that_is_not_live_is_ignored() -> None:
    # GIVEN a pin left by a rollback that crashed before its switch
    pin = RollbackPin(sha=OLD, ref_tip_at_pin=TIP)
    decision = decide_sync(SyncInputs(LIVE, TIP, TIP, Relation.DESCENDANT, pin=pin))
    assert decision.action is Action.PUBLISH
