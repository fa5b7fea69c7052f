"""The publish decision: pure, so every rule reads as a test.

Given what is live, what was requested and how the two commits relate, decide to publish,
do nothing, or refuse, with a reason an operator can read. The safe default is "do nothing
destructive": anything not clearly newer (or explicitly a rollback) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Relation(StrEnum):
    """How the requested commit relates to the live one in the fetched history."""

    SAME = "same"
    DESCENDANT = "descendant"  # requested is newer: live is one of its ancestors
    ANCESTOR = "ancestor"  # requested is older: it is an ancestor of live
    UNKNOWN = "unknown"  # diverged (force-push) or beyond the fetched history


class Action(StrEnum):
    PUBLISH = "publish"
    NOOP = "noop"
    REFUSE = "refuse"


@dataclass(frozen=True)
class RollbackPin:
    """An explicit rollback holds while the ref's tip is still the one seen at rollback time."""

    sha: str
    ref_tip_at_pin: str


@dataclass(frozen=True)
class SyncInputs:
    live_sha: str | None
    requested_sha: str
    ref_tip_sha: str
    relation: Relation
    rollback: bool = False
    pin: RollbackPin | None = None


@dataclass(frozen=True)
class SyncDecision:
    action: Action
    sha: str
    reason: str


def decide_sync(inputs: SyncInputs) -> SyncDecision:
    """Publish, noop or refuse the requested commit."""
    req, live = inputs.requested_sha, inputs.live_sha
    if live is None:
        return SyncDecision(Action.PUBLISH, req, f"no release is live yet: publishing {req[:12]}")
    if req == live:
        return SyncDecision(Action.NOOP, req, f"{req[:12]} is already live")
    if inputs.rollback:
        return SyncDecision(Action.PUBLISH, req, f"explicit rollback from {live[:12]} to {req[:12]}")
    pin = inputs.pin
    if pin is not None and pin.sha == live and inputs.ref_tip_sha == pin.ref_tip_at_pin:
        return SyncDecision(
            Action.NOOP,
            live,
            f"held at rollback {live[:12]}: the ref's tip is still {pin.ref_tip_at_pin[:12]}; "
            "a new commit on the ref (or another rollback) releases the hold",
        )
    return _decide_by_relation(inputs, live)


def _decide_by_relation(inputs: SyncInputs, live: str) -> SyncDecision:
    """The ref's tip always wins; any other commit only if it is newer than live.

    Why the tip wins even when it is older than live (the branch was moved back) or unrelated
    (a force-push): the branch is the declared source of truth, and only this rule gives the
    same answer whatever the Git cache holds. Proving "older" needs the live commit's history,
    which a cold cache (a new Lambda container) does not have and a rewritten remote may no
    longer serve; refusing on a warm cache and publishing on a cold one was the alternative.
    A late trigger for an old commit is still refused: it is not the tip.
    """
    req = inputs.requested_sha
    if req == inputs.ref_tip_sha:
        if inputs.relation is Relation.DESCENDANT:
            return SyncDecision(Action.PUBLISH, req, f"{req[:12]} is newer than live {live[:12]}")
        return SyncDecision(
            Action.PUBLISH,
            req,
            f"{req[:12]} is the ref's current tip but not a descendant of live {live[:12]} (the branch "
            "was moved back or rewritten): the ref's tip is authoritative",
        )
    if inputs.relation is Relation.DESCENDANT:
        return SyncDecision(Action.PUBLISH, req, f"{req[:12]} is newer than live {live[:12]}")
    older = " (an ancestor)" if inputs.relation is Relation.ANCESTOR else ""
    return SyncDecision(
        Action.REFUSE,
        live,
        f"{req[:12]} is neither the ref's tip ({inputs.ref_tip_sha[:12]}) nor newer than live "
        f"{live[:12]}{older}: refusing to replace it; request a rollback to publish it",
    )
