"""Is the Airflow environment healthy? The api-server's ``/api/v2/monitor/health`` answer.

:func:`evaluate_health` is pure: it takes the JSON document and returns a
:class:`HealthVerdict` whose ``reason`` names every unhealthy or missing component.
:class:`HttpHealthSource` fetches the document with bounded timeouts. A source that cannot
be reached, answers with an error status or with something that is not JSON is "not healthy
yet", never a crash: during start-up the api-server is simply not there.

Both runtimes use this module: the health-gate Lambda checks once (:func:`check_health`;
the state machine retries), the local runtime's ``afctl up`` waits with
:func:`wait_until_healthy` (on the poll helper), and ``afctl status`` / ``afctl bench-up``
read one verdict with :func:`read_health`.

Airflow 3 answers, for example::

    {"metadatabase": {"status": "healthy"},
     "scheduler": {"status": "healthy", "latest_scheduler_heartbeat": "..."},
     "triggerer": {"status": "healthy", "latest_triggerer_heartbeat": "..."},
     "dag_processor": {"status": "healthy", "latest_dag_processor_heartbeat": "..."}}
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_control_plane.errors import ConfigError, TransientError
from airflow_control_plane.poll import PollTimedOut, poll_until

HEALTH_PATH = "/api/v2/monitor/health"
REQUIRED_COMPONENTS: tuple[str, ...] = ("metadatabase", "scheduler", "dag_processor", "triggerer")
_MAX_BODY_BYTES = 1_000_000


class NotHealthyYet(TransientError):
    """The environment is not (yet) healthy; the state machine retries this, bounded.

    The class name is the error name Step Functions routes on: keep it stable.
    """


@dataclass(frozen=True)
class HealthVerdict:
    healthy: bool
    components: Mapping[str, str]  # component -> "healthy", "unhealthy", "not started" or "missing"
    reason: str

    @property
    def unhealthy(self) -> tuple[str, ...]:
        """The components that are not healthy (all required ones when the answer was unusable)."""
        if not self.healthy and not self.components:
            return REQUIRED_COMPONENTS
        return tuple(name for name, status in self.components.items() if status != "healthy")

    @property
    def summary(self) -> str:
        """``name=status`` for each component that is not healthy, else the reason."""
        bad = [f"{name}={status}" for name, status in self.components.items() if status != "healthy"]
        return ", ".join(bad) if bad else self.reason

    def to_json(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "components": dict(self.components), "reason": self.reason}


def evaluate_health(document: object, required: tuple[str, ...] = REQUIRED_COMPONENTS) -> HealthVerdict:
    """Judge a health document: healthy only when every required component says so."""
    if not isinstance(document, Mapping):
        return HealthVerdict(False, {}, f"health answer is not a JSON object: {type(document).__name__}")
    statuses: dict[str, str] = {}
    for name in required:
        entry = document.get(name)
        if not isinstance(entry, Mapping):
            statuses[name] = "missing"
            continue
        status = entry.get("status")
        # Airflow answers a null status for a component that never ran (no job row yet).
        statuses[name] = status if isinstance(status, str) and status else "not started"
    bad = [f"{name} is {status}" for name, status in statuses.items() if status != "healthy"]
    if bad:
        return HealthVerdict(False, statuses, "not healthy: " + ", ".join(bad))
    return HealthVerdict(True, statuses, "healthy: " + ", ".join(required))


class HealthSource(Protocol):
    def fetch(self) -> object:
        """Return the parsed health document; raise NotHealthyYet when it cannot be had."""
        ...


class HttpHealthSource:
    """GET ``<base_url>/api/v2/monitor/health`` with connect/read timeouts."""

    def __init__(self, base_url: str, timeout_seconds: float = 5.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"the api-server URL must start with http:// or https://, got {base_url!r}")
        if timeout_seconds <= 0:
            raise ConfigError(f"the health timeout must be positive, got {timeout_seconds}")
        self.url = base_url.rstrip("/") + HEALTH_PATH
        self.timeout_seconds = timeout_seconds

    def fetch(self) -> object:
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:  # noqa: S310
                body = response.read(_MAX_BODY_BYTES)
        except urllib.error.HTTPError as exc:
            raise NotHealthyYet(f"{self.url} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NotHealthyYet(f"{self.url} is not reachable: {reason}") from None
        try:
            return json.loads(body)
        except ValueError:
            raise NotHealthyYet(f"{self.url} answered something that is not JSON: {body[:80]!r}") from None


def check_health(source: HealthSource) -> HealthVerdict:
    """Fetch and judge once; raise NotHealthyYet (with the reason) unless healthy."""
    verdict = evaluate_health(source.fetch())
    if not verdict.healthy:
        raise NotHealthyYet(verdict.reason)
    return verdict


def read_health(fetch: Callable[[], object]) -> HealthVerdict:
    """Fetch and judge once, never raising: an api-server that does not answer is a verdict."""
    try:
        return evaluate_health(fetch())
    except NotHealthyYet as exc:
        return HealthVerdict(False, {}, str(exc))


def wait_until_healthy(
    fetch: Callable[[], object],
    timeout_s: float,
    *,
    poll_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[str], None] | None = None,
    progress_every_s: float = 10.0,
) -> HealthVerdict:
    """Poll ``fetch`` until healthy; after ``timeout_s`` raise NotHealthyYet naming what is not.

    ``fetch`` returns the health document or raises NotHealthyYet (HttpHealthSource.fetch);
    any other error (say, a service that keeps crashing) ends the wait at once. Every
    ``progress_every_s`` the current verdict goes to ``progress``: a wait of a minute or two
    says what it waits for instead of printing nothing."""
    started = clock()
    last_note = started
    seen: list[HealthVerdict] = []

    def check() -> HealthVerdict | None:
        nonlocal last_note
        verdict = read_health(fetch)
        seen.append(verdict)
        if verdict.healthy:
            return verdict
        now = clock()
        if progress is not None and now - last_note >= progress_every_s:
            progress(f"  health gate, {now - started:.0f}/{timeout_s:.0f} s: {verdict.summary}")
            last_note = now
        return None

    try:
        return poll_until(
            check, timeout_s=timeout_s, interval_s=poll_s, what="health gate", clock=clock, sleep=sleep
        )
    except PollTimedOut:
        what = f"not healthy: {seen[-1].summary}" if seen else "no answer"
        raise NotHealthyYet(f"health gate: not healthy after {timeout_s:.0f} s ({what})") from None
