"""The one-off steps' decisions: run the migration or skip it, create the admin or skip it.
Pure functions returning a reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class JobDecision:
    run: bool
    reason: str


def decide_migration(
    recorded: Mapping[str, Any] | None, db_revision: str | None, airflow_version: str, database: str
) -> JobDecision:
    """Skip ``airflow db migrate`` only when this state folder migrated this very database to
    the revision it has now, with this Airflow version. In doubt, migrate (it is idempotent)."""
    if db_revision is None:
        return JobDecision(True, "the database has no Airflow schema yet")
    if not recorded:
        return JobDecision(True, f"schema at {db_revision}, not migrated from this state folder yet")
    if recorded.get("database") != database:
        return JobDecision(True, "the recorded migration was for another database")
    if recorded.get("airflow_version") != airflow_version or airflow_version == "unknown":
        return JobDecision(True, f"Airflow version changed to {airflow_version}")
    if recorded.get("revision") != db_revision:
        return JobDecision(True, f"schema revision {db_revision} differs from the recorded one")
    return JobDecision(False, f"schema already at {db_revision} for Airflow {airflow_version}")


def decide_admin(has_credentials: bool, user_exists: bool | None, username: str) -> JobDecision:
    if has_credentials and user_exists:
        return JobDecision(False, f"user {username!r} exists and its credentials are stored")
    if user_exists and not has_credentials:
        return JobDecision(True, f"user {username!r} exists but its password is not stored: reset it")
    return JobDecision(True, f"create user {username!r} with a generated password")


def decide_reconfigure(
    recorded: Mapping[str, Any], wanted: Mapping[str, Any], *, running: bool
) -> JobDecision:
    """May ``up`` apply these settings? On a running environment a changed port, database or
    broker would reach only the processes started afterwards (workers on a dead execution
    URL): refuse, naming what changed and how to apply it. Nothing is recorded on refusal."""
    changed = [
        f"{key} {recorded[key]} -> {wanted[key]}"
        for key in sorted(wanted)
        if recorded.get(key) is not None and recorded.get(key) != wanted[key]
    ]
    if not changed:
        return JobDecision(True, "settings unchanged")
    if not running:
        return JobDecision(True, "changed while stopped: " + "; ".join(changed))
    return JobDecision(
        False,
        "the running environment uses other settings than asked ("
        + "; ".join(changed)
        + "): nothing was changed. Apply them with `afctl down` then `afctl up`, or unset the "
        "variable to keep the running values",
    )
