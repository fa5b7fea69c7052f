"""The bring-up and hibernate requests: a documented schema with defaults, validated once.

Both state machines start by passing their execution input through :func:`parse_bring_up`
or :func:`parse_hibernate` (the ``bringup_validate`` Lambda), so a typo or an impossible
number fails the execution before anything changes, with a message naming the field.
Unknown fields are errors too: a misspelt ``workrs`` must not silently mean "the default".

Bring-up input (every field optional)::

    {
      "services": {"api-server": 1, "scheduler": 1, "dag-processor": 1, "triggerer": 1},
      "workers": {"minimum": 0},
      "adminUser": {"mode": "create", "username": "admin", "email": "admin@example.com",
                    "firstName": "Airflow", "lastName": "Admin", "role": "Admin"},
      "settle": {"pollSeconds": 15, "maxPolls": 40},
      "requestedBy": "operator name or schedule"
    }

Hibernate input (every field optional)::

    {"drain": {"pollSeconds": 30, "maxPolls": 20}, "force": false, "requestedBy": "..."}

The admin password is never part of either input: the create-user task reads it from
Secrets Manager inside the container.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from airflow_control_plane.bringup.steps import CORE_SERVICES
from airflow_control_plane.errors import InvalidInputError

MAX_CORE_COUNT = 10
MAX_WORKER_MINIMUM = 50
MAX_POLL_SECONDS = 300
MAX_POLLS = 240
# A wait loop may last at most this long; the state machines' own TimeoutSeconds (6 h) is
# above it plus migration and health gate, so a loop always ends in a named failure first.
MAX_WAIT_WINDOW_SECONDS = 4 * 3600

# The admin user's fields travel to the container as environment variables (never
# interpolated into a shell command), but they are still restricted to a plain
# character set so that logs and the Airflow UI show exactly what was asked for.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}\Z")
_PERSON_RE = re.compile(r"^[^\x00-\x1f\"'`$\\;|&<>]{1,64}\Z")
_EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z]{2,24}\Z")
_ROLES = ("Admin", "Op", "User", "Viewer", "Public")
_REQUESTED_BY_MAX = 200


class AdminUserMode(StrEnum):
    CREATE = "create"  # create when missing; an existing user is left as it is
    UPDATE = "update"  # create when missing, and reset the password from the secret
    SKIP = "skip"  # do not touch users


@dataclass(frozen=True)
class AdminUser:
    mode: AdminUserMode = AdminUserMode.CREATE
    username: str = "admin"
    email: str = "admin@example.com"
    first_name: str = "Airflow"
    last_name: str = "Admin"
    role: str = "Admin"


@dataclass(frozen=True)
class Polling:
    """A bounded wait loop: poll every ``poll_seconds``, at most ``max_polls`` times."""

    poll_seconds: int
    max_polls: int


@dataclass(frozen=True)
class BringUpRequest:
    core_counts: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(CORE_SERVICES, 1))
    worker_minimum: int = 0
    admin_user: AdminUser = AdminUser()
    settle: Polling = Polling(poll_seconds=15, max_polls=40)
    requested_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The normalised request, in the same camelCase shape as the input."""
        return {
            "services": dict(self.core_counts),
            "workers": {"minimum": self.worker_minimum},
            "adminUser": {
                "mode": self.admin_user.mode.value,
                "username": self.admin_user.username,
                "email": self.admin_user.email,
                "firstName": self.admin_user.first_name,
                "lastName": self.admin_user.last_name,
                "role": self.admin_user.role,
            },
            "settle": {"pollSeconds": self.settle.poll_seconds, "maxPolls": self.settle.max_polls},
            "requestedBy": self.requested_by,
        }


@dataclass(frozen=True)
class HibernateRequest:
    drain: Polling = Polling(poll_seconds=30, max_polls=20)
    force: bool = False
    requested_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "drain": {"pollSeconds": self.drain.poll_seconds, "maxPolls": self.drain.max_polls},
            "force": self.force,
            "requestedBy": self.requested_by,
        }


def _object(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def _reject_unknown(obj: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(set(obj) - known)
    if unknown:
        raise InvalidInputError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(known)}")


def _int(obj: Mapping[str, Any], name: str, where: str, *, default: int, low: int, high: int) -> int:
    value = obj.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{where}.{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise InvalidInputError(f"{where}.{name} must be between {low} and {high}, got {value}")
    return value


def _str(obj: Mapping[str, Any], name: str, where: str, *, default: str, pattern: re.Pattern[str]) -> str:
    value = obj.get(name, default)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidInputError(f"{where}.{name} is not acceptable: {value!r}")
    return value


def _requested_by(obj: Mapping[str, Any]) -> str | None:
    value = obj.get("requestedBy")
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= _REQUESTED_BY_MAX:
        raise InvalidInputError(f"requestedBy must be a string of 1 to {_REQUESTED_BY_MAX} characters")
    return value


def _polling(value: object, where: str, default: Polling, *, min_polls: int) -> Polling:
    obj = _object(value, where)
    _reject_unknown(obj, frozenset({"pollSeconds", "maxPolls"}), where)
    polling = Polling(
        poll_seconds=_int(
            obj, "pollSeconds", where, default=default.poll_seconds, low=1, high=MAX_POLL_SECONDS
        ),
        max_polls=_int(obj, "maxPolls", where, default=default.max_polls, low=min_polls, high=MAX_POLLS),
    )
    if polling.poll_seconds * polling.max_polls > MAX_WAIT_WINDOW_SECONDS:
        raise InvalidInputError(
            f"{where}: pollSeconds x maxPolls = {polling.poll_seconds * polling.max_polls} s exceeds "
            f"the {MAX_WAIT_WINDOW_SECONDS} s limit"
        )
    return polling


def _core_counts(value: object) -> dict[str, int]:
    obj = _object(value, "services")
    _reject_unknown(obj, frozenset(CORE_SERVICES), "services")
    # Every core service must run at least once: the health gate needs all four.
    return {
        name: _int(obj, name, "services", default=1, low=1, high=MAX_CORE_COUNT) for name in CORE_SERVICES
    }


def _admin_user(value: object) -> AdminUser:
    where = "adminUser"
    obj = _object(value, where)
    if "password" in obj:
        raise InvalidInputError(
            "adminUser.password must never be passed in the input: the create-user task reads it "
            "from Secrets Manager inside the container"
        )
    known = frozenset({"mode", "username", "email", "firstName", "lastName", "role"})
    _reject_unknown(obj, known, where)
    mode_raw = obj.get("mode", AdminUserMode.CREATE.value)
    try:
        mode = AdminUserMode(mode_raw)
    except ValueError:
        allowed = [m.value for m in AdminUserMode]
        raise InvalidInputError(f"{where}.mode must be one of {allowed}, got {mode_raw!r}") from None
    role = obj.get("role", "Admin")
    if role not in _ROLES:
        raise InvalidInputError(f"{where}.role must be one of {list(_ROLES)}, got {role!r}")
    return AdminUser(
        mode=mode,
        username=_str(obj, "username", where, default="admin", pattern=_NAME_RE),
        email=_str(obj, "email", where, default="admin@example.com", pattern=_EMAIL_RE),
        first_name=_str(obj, "firstName", where, default="Airflow", pattern=_PERSON_RE),
        last_name=_str(obj, "lastName", where, default="Admin", pattern=_PERSON_RE),
        role=role,
    )


_BRING_UP_FIELDS = frozenset({"services", "workers", "adminUser", "settle", "requestedBy"})
_HIBERNATE_FIELDS = frozenset({"drain", "force", "requestedBy"})


def parse_bring_up(raw: object) -> BringUpRequest:
    """Validate a bring-up execution input and fill in the documented defaults."""
    obj = _object(raw, "the bring-up input")
    _reject_unknown(obj, _BRING_UP_FIELDS, "the bring-up input")
    workers = _object(obj.get("workers"), "workers")
    _reject_unknown(workers, frozenset({"minimum"}), "workers")
    return BringUpRequest(
        core_counts=_core_counts(obj.get("services")),
        worker_minimum=_int(workers, "minimum", "workers", default=0, low=0, high=MAX_WORKER_MINIMUM),
        admin_user=_admin_user(obj.get("adminUser")),
        settle=_polling(obj.get("settle"), "settle", BringUpRequest.settle, min_polls=1),
        requested_by=_requested_by(obj),
    )


def parse_hibernate(raw: object) -> HibernateRequest:
    """Validate a hibernate execution input and fill in the documented defaults."""
    obj = _object(raw, "the hibernate input")
    _reject_unknown(obj, _HIBERNATE_FIELDS, "the hibernate input")
    force = obj.get("force", False)
    if not isinstance(force, bool):
        raise InvalidInputError(f"force must be true or false, got {force!r}")
    return HibernateRequest(
        drain=_polling(obj.get("drain"), "drain", HibernateRequest.drain, min_polls=1),
        force=force,
        requested_by=_requested_by(obj),
    )
