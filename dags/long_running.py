"""long_running: one task that runs for minutes, to prove scale-in never kills running work."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

DEFAULT_DURATION_SECONDS = 300
DEFAULT_PROGRESS_SECONDS = 15

DOC_MD = f"""
### long_running

One task, **hold**, that runs for `duration_seconds` (default {DEFAULT_DURATION_SECONDS} s)
in short sleeps and logs its progress every `progress_seconds` (default
{DEFAULT_PROGRESS_SECONDS} s). The task process stays responsive (the Task SDK heartbeats from
the supervisor while it sleeps), so a warm shutdown waits for it instead of killing it.

Use it to prove scale-in is safe: start a run, scale the workers in, and check that the task
instance finishes `success` with **try_number 1**. `retries` is 1 (house rule), so a kill
would show up as a second try rather than a failure: look at the try number, not only the
final state.
"""


@task(execution_timeout=timedelta(hours=2), multiple_outputs=False)
def hold() -> dict[str, int]:
    """Sleep in short steps for duration_seconds, logging progress."""
    params = get_current_context()["params"]
    duration, every = int(params["duration_seconds"]), int(params["progress_seconds"])
    started = time.monotonic()
    next_report = every
    while (elapsed := time.monotonic() - started) < duration:
        time.sleep(min(1.0, duration - elapsed))
        if time.monotonic() - started >= next_report:
            print(f"still running: {int(time.monotonic() - started)}/{duration} s")
            next_report += every
    print(f"done after {int(time.monotonic() - started)} s")
    return {"duration_seconds": duration}


@dag(
    dag_id="long_running",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["sample", "autoscaling", "scale-in"],
    doc_md=DOC_MD,
    default_args={"owner": "platform", "retries": 1, "retry_delay": timedelta(minutes=1)},
    params={
        "duration_seconds": Param(DEFAULT_DURATION_SECONDS, type="integer", minimum=1, maximum=6600),
        "progress_seconds": Param(DEFAULT_PROGRESS_SECONDS, type="integer", minimum=1, maximum=600),
    },
)
def long_running() -> None:
    hold()


long_running()
