"""isolated_task: one heavy step in its own Fargate task (AwsEcsExecutor), the rest on Celery."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import conf, dag, task

ECS_EXECUTOR = "AwsEcsExecutor"


def ecs_executor_configured() -> bool:
    """True when Airflow's executor list names the AwsEcsExecutor (the stack's
    EcsExecutorEnabled). Read at parse time: a task may name only a configured executor, and
    the local runtime and `afctl dags check` have Celery alone."""
    executors = [name.strip() for name in conf.get("core", "executor", fallback="").split(",")]
    return any(name.rsplit(".", 1)[-1] == ECS_EXECUTOR for name in executors)


ON_ECS = ecs_executor_configured()

DOC_MD = f"""
### isolated_task

**heavy_step** runs in its own Fargate task when the AwsEcsExecutor is configured beside
Celery (`EcsExecutorEnabled=true`; this parse: {"yes" if ON_ECS else "no, so it runs on a Celery worker"}).
It reports where it ran (`AIRFLOW_IS_EXECUTOR_CONTAINER`, set by the executor in its container
override) and a sum that **check** verifies. **prepare** and **check** always run on Celery.

Use a per-task Fargate task for a step that needs its own size (CPU, memory), its own isolation,
or runs rarely; keep short, frequent tasks on Celery (README: "Celery or a Fargate task per task").
"""


@task
def prepare() -> int:
    return 1_000_000


@task(executor=ECS_EXECUTOR if ON_ECS else None)
def heavy_step(n: int) -> dict[str, object]:
    on_fargate = os.environ.get("AIRFLOW_IS_EXECUTOR_CONTAINER") == "true"
    where = "own Fargate task" if on_fargate else "Celery worker"
    total = sum(range(n))
    print(f"heavy_step ran on: {where}; sum(range({n})) = {total}")
    return {"where": where, "total": total}


@task
def check(n: int, result: dict[str, object]) -> dict[str, object]:
    expected = n * (n - 1) // 2
    if result["total"] != expected:
        raise ValueError(f"heavy_step returned {result['total']}, expected {expected}")
    return result


@dag(
    dag_id="isolated_task",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["sample", "ecs-executor"],
    doc_md=DOC_MD,
    default_args={"owner": "platform", "retries": 1, "retry_delay": timedelta(minutes=1)},
)
def isolated_task() -> None:
    n = prepare()
    check(n, heavy_step(n))


isolated_task()
