"""``afctl up``'s own decision: may it apply the asked settings to what runs?

The one-off jobs' decisions (migrate, admin user) are the shared ones in bringup/jobs.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_control_plane.bringup.jobs import JobDecision


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
