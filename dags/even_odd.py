"""even_odd: the classic "Airflow on Fargate" reference pipeline.

start -> (pick odd numbers, pick even numbers) in parallel -> join.

The two picks run the same small program (``PICK_NUMBERS_SCRIPT``) either as standalone
Fargate tasks through the Amazon provider's ``EcsRunTaskOperator`` or, by default, on the
Celery worker as a child process. One switch chooses: ``SAMPLE_DAGS_RUN_ON_ECS``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import dag, task

UPTO = 10
PARITIES = ("odd", "even")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}

# The program both paths run. It prints one JSON line as its LAST output line; on ECS the
# operator pushes the last CloudWatch log line to XCom, locally the task returns that line.
PICK_NUMBERS_SCRIPT = (
    "import json, sys\n"
    "parity, upto = sys.argv[1], int(sys.argv[2])\n"
    "remainder = {'odd': 1, 'even': 0}[parity]\n"
    "numbers = [n for n in range(1, upto + 1) if n % 2 == remainder]\n"
    "print(json.dumps({'parity': parity, 'numbers': numbers}))\n"
)

DOC_MD = """
### even_odd

The reference pipeline for Airflow on ECS Fargate: a **start** step, two parallel steps that
pick the **odd** and the **even** numbers of 1..10, and a **join** step that checks the two
lists partition 1..10 and returns their sums (`{"odd_sum": 25, "even_sum": 30, ...}`).

**Where the two picks run** is chosen by one environment variable, read when the DAG file is
parsed (set it identically on the dag-processor, scheduler and workers):

| `SAMPLE_DAGS_RUN_ON_ECS` | the picks run as |
|---|---|
| unset / `false` (default) | ordinary Celery tasks; each runs `PICK_NUMBERS_SCRIPT` as a child process |
| `true` | standalone Fargate tasks (`EcsRunTaskOperator`) running the same script |

On ECS these variables are required; the stack does not set them (it has no task definition
for the picks), so set them on the dag-processor, scheduler and workers yourself:
`SAMPLE_DAGS_ECS_CLUSTER`, `SAMPLE_DAGS_ECS_TASK_DEFINITION`, `SAMPLE_DAGS_ECS_CONTAINER_NAME`,
`SAMPLE_DAGS_ECS_SUBNETS` and `SAMPLE_DAGS_ECS_SECURITY_GROUPS` (comma-separated),
`SAMPLE_DAGS_ECS_AWSLOGS_GROUP` and `SAMPLE_DAGS_ECS_AWSLOGS_STREAM_PREFIX` (the task
definition's awslogs settings). The task definition's image must provide `python`.

**How results come back from ECS:** the container prints one JSON line as its last output;
the operator reads the task's CloudWatch log stream and pushes the last line to XCom
(`do_xcom_push=True`). The join parses that line the same way on both paths, so a container
that exits 0 without printing its numbers fails the join instead of passing silently.
"""


def _run_on_ecs() -> bool:
    raw = os.environ.get("SAMPLE_DAGS_RUN_ON_ECS", "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"SAMPLE_DAGS_RUN_ON_ECS must be true or false, got {raw!r}")


def _required_env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ValueError(f"{name} is required when SAMPLE_DAGS_RUN_ON_ECS is true (see the DAG's doc_md)")
    return value


def _csv_env(name: str) -> list[str]:
    return [item.strip() for item in _required_env(name).split(",") if item.strip()]


def _ecs_pick(parity: str) -> Any:
    """A standalone Fargate task that runs the pick script (imported only on the ECS path)."""
    from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator

    container = _required_env("SAMPLE_DAGS_ECS_CONTAINER_NAME")
    return EcsRunTaskOperator(
        task_id=f"pick_{parity}",
        aws_conn_id=None,  # the worker's task role through the default credential chain
        cluster=_required_env("SAMPLE_DAGS_ECS_CLUSTER"),
        task_definition=_required_env("SAMPLE_DAGS_ECS_TASK_DEFINITION"),
        launch_type="FARGATE",
        platform_version="LATEST",
        network_configuration={
            "awsvpcConfiguration": {
                "subnets": _csv_env("SAMPLE_DAGS_ECS_SUBNETS"),
                "securityGroups": _csv_env("SAMPLE_DAGS_ECS_SECURITY_GROUPS"),
                "assignPublicIp": "DISABLED",
            }
        },
        overrides={
            "containerOverrides": [
                {"name": container, "command": ["python", "-c", PICK_NUMBERS_SCRIPT, parity, str(UPTO)]}
            ]
        },
        container_name=container,
        awslogs_group=_required_env("SAMPLE_DAGS_ECS_AWSLOGS_GROUP"),
        awslogs_stream_prefix=_required_env("SAMPLE_DAGS_ECS_AWSLOGS_STREAM_PREFIX"),
        deferrable=False,
        do_xcom_push=True,
    )


@task
def start() -> int:
    """Announce the range the picks will split."""
    print(f"splitting 1..{UPTO} into odd and even numbers")
    return UPTO


@task
def local_pick(parity: str, upto: int) -> str:
    """Run the pick script as a child process of the Celery worker; return its last line."""
    completed = subprocess.run(
        [sys.executable, "-c", PICK_NUMBERS_SCRIPT, parity, str(upto)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    print(completed.stdout)
    return completed.stdout.strip().splitlines()[-1]


def _parse_pick(raw: object, parity: str) -> list[int]:
    if not isinstance(raw, str):
        raise ValueError(f"pick_{parity} returned {raw!r}, expected its JSON output line")
    result = json.loads(raw)
    if result.get("parity") != parity or not all(isinstance(n, int) for n in result.get("numbers", [None])):
        raise ValueError(f"pick_{parity} returned an unexpected result: {raw}")
    return list(result["numbers"])


@task(multiple_outputs=False)
def join(odd_raw: object, even_raw: object) -> dict[str, Any]:
    """Check the two picks partition 1..UPTO and return their sums."""
    odd, even = _parse_pick(odd_raw, "odd"), _parse_pick(even_raw, "even")
    if sorted(odd + even) != list(range(1, UPTO + 1)) or set(odd) & set(even):
        raise ValueError(f"odd {odd} and even {even} do not partition 1..{UPTO}")
    result = {"odd": odd, "even": even, "odd_sum": sum(odd), "even_sum": sum(even), "total": sum(odd + even)}
    print(f"joined: {result}")
    return result


@dag(
    dag_id="even_odd",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["sample", "fargate", "reference"],
    doc_md=DOC_MD,
    default_args={"owner": "platform", "retries": 2, "retry_delay": timedelta(seconds=30)},
    max_active_runs=4,
)
def even_odd() -> None:
    upto = start()
    if _run_on_ecs():
        odd, even = _ecs_pick("odd"), _ecs_pick("even")
        upto >> [odd, even]
        join(odd.output, even.output)
    else:
        odd_raw = local_pick.override(task_id="pick_odd")("odd", upto)
        even_raw = local_pick.override(task_id="pick_even")("even", upto)
        join(odd_raw, even_raw)


even_odd()
