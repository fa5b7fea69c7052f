"""fanout: a burst of parallel work (dynamic task mapping) that makes the autoscaler add workers."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

DEFAULT_TASK_COUNT = 48
DEFAULT_SLEEP_SECONDS = 60
# The Celery queue is fixed when the file is parsed (a task's queue cannot come from run params).
QUEUE = os.environ.get("SAMPLE_DAGS_FANOUT_QUEUE", "").strip() or "default"

DOC_MD = f"""
### fanout

A load generator for the worker autoscaler: **plan** emits `task_count` items (default
{DEFAULT_TASK_COUNT}), **work** is mapped over them with `.expand` and each item sleeps
`sleep_seconds` (default {DEFAULT_SLEEP_SECONDS}) on the Celery queue `{QUEUE}`, and **reduce**
checks every item came back and reports the total.

With the default worker concurrency of 16, 48 items keep 3 workers busy: the scaling policy
(`ceil((queued + running) / worker_concurrency)`) should add workers while they are queued and
remove them once the run is done.

* Params: `task_count` (1..1024), `sleep_seconds` (0..3600).
* Queue: set `SAMPLE_DAGS_FANOUT_QUEUE` (default `default`) on the dag-processor, scheduler and
  workers; a task's queue is decided when the file is parsed, so it cannot be a run param.
* `max_active_tasks=1024` so the DAG's own limit never hides demand from the autoscaler.
"""


@task
def plan() -> list[int]:
    """One item per mapped task, sized by the run's params."""
    params = get_current_context()["params"]
    count = int(params["task_count"])
    print(f"fanning out {count} items of {params['sleep_seconds']} s on queue {QUEUE!r}")
    return list(range(count))


@task(queue=QUEUE, multiple_outputs=False)
def work(item: int) -> dict[str, Any]:
    """Hold a worker slot for sleep_seconds, logging once a minute."""
    seconds = int(get_current_context()["params"]["sleep_seconds"])
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        time.sleep(min(60.0, seconds - elapsed))
        print(f"item {item}: {int(time.monotonic() - started)}/{seconds} s")
    return {"item": item, "slept_seconds": seconds}


@task(multiple_outputs=False)
def reduce(results: list[dict[str, Any]]) -> dict[str, int]:
    """Check every item reported back exactly once and total the work done."""
    items = sorted(int(r["item"]) for r in results)
    if items != list(range(len(items))):
        raise ValueError(f"mapped results are missing or duplicated: {items}")
    summary = {"items": len(items), "total_slept_seconds": sum(int(r["slept_seconds"]) for r in results)}
    print(f"reduced: {summary}")
    return summary


@dag(
    dag_id="fanout",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["sample", "autoscaling", "load"],
    doc_md=DOC_MD,
    default_args={"owner": "platform", "retries": 1, "retry_delay": timedelta(seconds=30)},
    max_active_tasks=1024,
    params={
        "task_count": Param(DEFAULT_TASK_COUNT, type="integer", minimum=1, maximum=1024),
        "sleep_seconds": Param(DEFAULT_SLEEP_SECONDS, type="integer", minimum=0, maximum=3600),
    },
)
def fanout() -> None:
    reduce(work.expand(item=plan()))


fanout()
