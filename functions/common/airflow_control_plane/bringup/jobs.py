"""The one-off jobs' decisions: migrate the metadata database or not, create the admin user or not.

Pure functions returning a :class:`JobDecision` with a reason, used by both runtimes:

- :func:`decide_admin` is the bring-up plan's admin decision (bringup/plan.py, run by the
  bringup-validate Lambda, which cannot see the user table: ``user_exists`` None, the
  create-user task checks) and ``afctl up``'s (local/bringup.py, which reads the user table
  and the stored password).
- :func:`decide_migration` skips ``airflow db migrate`` only when the very same database was
  migrated to the revision it has now with this Airflow version. ``afctl up`` records each
  migration in its state folder and asks; the AWS state machine keeps no record between
  executions, so there the answer would always be "migrate" and the task simply always runs
  (migrating is idempotent).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_control_plane.bringup.input import AdminUserMode


@dataclass(frozen=True)
class JobDecision:
    run: bool
    reason: str


def decide_migration(
    recorded: Mapping[str, Any] | None, db_revision: str | None, airflow_version: str, database: str
) -> JobDecision:
    """Skip ``airflow db migrate`` only when this very database was migrated to the revision
    it has now, with this Airflow version, as recorded. In doubt, migrate (it is idempotent)."""
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


def decide_admin(
    mode: AdminUserMode,
    username: str,
    *,
    already_running: bool = False,
    user_exists: bool | None = None,
    password_stored: bool = True,
) -> JobDecision:
    """Run the create-user job or not.

    ``user_exists`` None: unknown here (the job itself creates the user only if missing).
    ``password_stored``: the password the job would set is kept where the operator reads it
    (Secrets Manager on AWS; the state folder's credentials file locally); an existing user
    whose password is not kept gets it reset."""
    if mode is AdminUserMode.SKIP:
        return JobDecision(False, "admin user skipped (mode skip)")
    if mode is AdminUserMode.UPDATE:
        return JobDecision(True, "admin user created or its password reset (mode update)")
    if user_exists and password_stored:
        return JobDecision(False, f"user {username!r} exists and its credentials are stored")
    if user_exists:
        return JobDecision(True, f"user {username!r} exists but its password is not stored: reset it")
    if user_exists is False:
        return JobDecision(True, f"create user {username!r} with a generated password")
    if already_running:
        return JobDecision(False, "admin user not touched (already running, mode create)")
    return JobDecision(True, "admin user created if missing")
