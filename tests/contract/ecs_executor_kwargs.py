"""Run inside the Airflow runtime (.venv): print the RunTask arguments the AwsEcsExecutor of the
locked amazon provider builds for one task instance, from the AIRFLOW__AWS_ECS_EXECUTOR__*
settings in the environment. Reads ``{"executor_configs": [{...}, ...]}`` on stdin and prints
one result per executor_config (one Airflow start for all of them).

The provider's own code does the work: ``AwsEcsExecutor()`` loads the settings
(``ecs_executor_config.build_task_kwargs``), ``_serialize_workload_to_command`` turns a real
``ExecuteTask`` workload into the container command, and ``_run_task_kwargs`` merges the
task's executor_config and puts the command in the container override, exactly as
``attempt_task_runs`` does before it calls ``ecs.run_task``. No AWS call is made here.
"""

from __future__ import annotations

import json
import sys
import uuid

from airflow.executors import workloads
from airflow.providers.amazon.aws.executors.ecs.ecs_executor import AwsEcsExecutor


def main() -> None:
    executor = AwsEcsExecutor()
    results = [run_task_kwargs(executor, config) for config in json.load(sys.stdin)["executor_configs"]]
    json.dump(results, sys.stdout, default=str)


def run_task_kwargs(executor: AwsEcsExecutor, executor_config: dict[str, object]) -> dict[str, object]:
    ti = workloads.TaskInstance(
        id=uuid.uuid4(),
        task_id="heavy_step",
        dag_id="isolated_fargate_sample",
        run_id="manual__2026-11-30T20:00:00+00:00",
        try_number=1,
        dag_version_id=uuid.uuid4(),
        map_index=-1,
        queue="default",
        pool_slots=1,
        priority_weight=1,
        executor_config=executor_config,
    )
    workload = workloads.ExecuteTask(
        token="token-for-this-task-only",
        dag_rel_path="isolated_fargate_sample.py",
        bundle_info={"name": "dags", "version": None},
        log_path="dag_id=isolated_fargate_sample/run_id=manual/task_id=heavy_step/attempt=1.log",
        ti=ti,
    )
    command = executor._serialize_workload_to_command(workload)
    kwargs = executor._run_task_kwargs(ti.key, command, ti.queue, executor_config)
    return {"run_task_kwargs": kwargs, "command": command}


if __name__ == "__main__":
    main()
