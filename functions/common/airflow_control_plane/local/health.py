"""The health gate: is every Airflow component healthy according to the api-server?"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from airflow_control_plane.errors import TransientError

HEALTH_PATH = "/api/v2/monitor/health"
HEALTH_COMPONENTS: tuple[str, ...] = ("metadatabase", "scheduler", "dag_processor", "triggerer")


@dataclass(frozen=True)
class HealthVerdict:
    healthy: bool
    unhealthy: tuple[str, ...]
    reason: str


def evaluate_health(payload: object) -> HealthVerdict:
    """Healthy only if every required component reports status "healthy" (pure)."""
    if payload is None:
        return HealthVerdict(False, HEALTH_COMPONENTS, "the api-server does not answer yet")
    if not isinstance(payload, dict):
        return HealthVerdict(False, HEALTH_COMPONENTS, f"unexpected health answer: {payload!r:.200}")
    bad = []
    for name in HEALTH_COMPONENTS:
        entry = payload.get(name)
        status = entry.get("status") if isinstance(entry, dict) else None
        if status != "healthy":
            bad.append(f"{name}={status}")
    if bad:
        return HealthVerdict(False, tuple(b.split("=")[0] for b in bad), "not healthy: " + ", ".join(bad))
    return HealthVerdict(True, (), "metadatabase, scheduler, dag_processor and triggerer are healthy")


def fetch_health(base_url: str, timeout_s: float = 5.0) -> object:
    """The parsed health document, or None if the api-server does not answer (yet)."""
    url = base_url.rstrip("/") + HEALTH_PATH
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - http://loopback
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


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
    """Poll until healthy; after ``timeout_s`` raise TransientError naming what is unhealthy.

    Every ``progress_every_s`` the current verdict goes to ``progress``: a wait of a minute
    or two says what it waits for instead of printing nothing."""
    started = clock()
    deadline = started + timeout_s
    last_note = started
    while True:
        verdict = evaluate_health(fetch())
        if verdict.healthy:
            return verdict
        now = clock()
        if now >= deadline:
            raise TransientError(f"health gate: not healthy after {timeout_s:.0f} s ({verdict.reason})")
        if progress is not None and now - last_note >= progress_every_s:
            progress(f"  health gate, {now - started:.0f}/{timeout_s:.0f} s: {verdict.reason}")
            last_note = now
        sleep(poll_s)
