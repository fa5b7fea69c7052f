"""The real state machines and Lambdas over the real containers: the emulator plus the ECS bridge.

:func:`bridged_environment` starts the Step Functions emulator (tests/statemachines/
sfn_emulator.py), registers the real Lambda handlers behind the state machines' Lambda tasks
(bring-up validation; the health gate pointed at the api-server container's port; the drain
check reading the stack's real database through a Secrets Manager secret, as deployed), maps
the emulator's task definitions and services onto the template's containers, and wraps moto's
ECS with :mod:`tests.containers.ecs_bridge`. bringup.asl.json and hibernate.asl.json then run
unchanged and start, check and stop real containers.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, load_event
from tests.containers.ecs_bridge import EcsBridge, bridged
from tests.containers.stack import Stack
from tests.containers.taskdefs import SECRET_ARN_PREFIX, Resolver, TemplateError, translated_template
from tests.statemachines.sfn_emulator import (
    Emulator,
    Execution,
    emulated_aws,
    invoke_like_lambda_runtime,
    load_handler_module,
)

# The services bring-up starts, by the emulator's service key, and the role each runs.
SERVICE_ROLES = {
    "api-server": "api-server",
    "scheduler": "scheduler",
    "dag-processor": "dag-processor",
    "triggerer": "triggerer",
    "worker": "celery-worker",
}
ADMIN_USER = {
    "mode": "create",
    "username": "admin",
    "email": "airflow-admin@example.com",
    "firstName": "Airflow",
    "lastName": "Admin",
    "role": "Admin",
}


def bringup_input(requested_by: str, *, poll_seconds: int = 5, max_polls: int = 60) -> dict[str, Any]:
    """One of each core service, no minimum workers (the autoscaler owns them)."""
    return {
        "services": {"api-server": 1, "scheduler": 1, "dag-processor": 1, "triggerer": 1},
        "workers": {"minimum": 0},
        "adminUser": ADMIN_USER,
        "settle": {"pollSeconds": poll_seconds, "maxPolls": max_polls},
        "requestedBy": requested_by,
    }


def hibernate_input(requested_by: str) -> dict[str, Any]:
    return {"drain": {"pollSeconds": 5, "maxPolls": 6}, "force": False, "requestedBy": requested_by}


@dataclass
class BridgedEnvironment:
    emulator: Emulator
    stack: Stack
    bridge: EcsBridge
    bringup_arn: str
    hibernate_arn: str

    def bringup(self, payload: dict[str, Any], timeout_s: float = 900) -> Execution:
        return self.emulator.run(self.bringup_arn, payload, timeout_seconds=timeout_s)

    def hibernate(self, payload: dict[str, Any], timeout_s: float = 600) -> Execution:
        return self.emulator.run(self.hibernate_arn, payload, timeout_seconds=timeout_s)

    def counts(self) -> dict[str, tuple[int, int]]:
        """(desired, running) per bridged service, as DescribeServices reports them."""
        counts = self.emulator.service_counts()
        return {key: counts[key] for key in SERVICE_ROLES}

    def service_name(self, key: str) -> str:
        return self.emulator.service_names[key]

    def set_queue_settings(self, **fields: Any) -> None:
        """Change the autoscaler's settings of every worker queue (its ``WORKER_QUEUES``), as a
        redeploy with other values would; the next tick builds its runtime anew."""
        queues = json.loads(os.environ["WORKER_QUEUES"])
        for queue in queues:
            queue.update(fields)
        os.environ["WORKER_QUEUES"] = json.dumps(queues)
        load_handler_module("autoscaler").build_runtime.cache_clear()

    def autoscale(self) -> dict[str, Any]:
        """One tick of the autoscaler Lambda (its schedule event), as the runtime runs it."""
        body, failed = invoke_like_lambda_runtime(
            autoscaler_handler(self.bridge), "autoscaler", json.dumps(load_event("autoscaler_schedule.json"))
        )
        result = json.loads(body)
        if failed:
            raise AssertionError(f"the autoscaler Lambda failed: {result}")
        return dict(result)


def autoscaler_handler(bridge: EcsBridge) -> Callable[[Any, Any], Any]:
    """The autoscaler Lambda's handler, its ECS client (built once per Lambda container)
    answered task protection by the workers' agents."""
    module = load_handler_module("autoscaler")

    def handler(event: Any, context: Any) -> Any:
        _config, ports = module.build_runtime()
        bridge.serve_task_protection(getattr(ports.services, "_client"))  # noqa: B009
        return module.lambda_handler(event, context)

    return handler


def autoscaler_environment(emulator: Emulator, stack: Stack) -> dict[str, str]:
    """The autoscaler function's environment from the translated template, pointed at the
    emulated account: its secrets created in Secrets Manager with the stack's local values,
    the cluster and service names the emulator uses."""
    template = translated_template(REPO_ROOT / "template.yaml")
    resolver = Resolver(template, {"AirflowImageUri": stack.specs[0].image})
    variables = resolver.resolve(template["Resources"]["AutoscalerFunction"]["Properties"]["Environment"])
    names = {
        "<Cluster>": emulator.cluster,
        "<SchedulerService.Name>": emulator.service_names["scheduler"],
        "<Worker1Service.Name>": emulator.service_names["worker"],
    }
    secrets = emulator.session.client("secretsmanager")
    out: dict[str, str] = {}
    for key, value in variables["Variables"].items():
        value = str(value)
        if value.startswith(SECRET_ARN_PREFIX):
            logical_id = value.removeprefix(SECRET_ARN_PREFIX)
            value = secrets.create_secret(Name=logical_id, SecretString=stack.ecs.secret_values[logical_id])[
                "ARN"
            ]
        for placeholder, name in names.items():
            value = value.replace(placeholder, name)
        if "<" in value and ">" in value:
            raise TemplateError(f"autoscaler {key}={value!r}: a resource the local account does not have")
        out[key] = value
    # At most two workers per queue (worker_queues.json says 4): N > 1 on a 2-core machine, no more.
    queues = json.loads(out["WORKER_QUEUES"])
    for queue in queues:
        queue["max"] = min(int(queue["max"]), 2)
    out["WORKER_QUEUES"] = json.dumps(queues)
    return out


@contextlib.contextmanager
def bridged_environment(stack: Stack) -> Iterator[BridgedEnvironment]:
    with emulated_aws(time_scale=1.0) as emulator, pytest.MonkeyPatch.context() as env:
        emulator.register_lambda("bringup-validate", load_handler_module("bringup_validate").lambda_handler)
        # The health gate checks the api-server container (its port on the shared host).
        env.setenv("API_SERVER_URL", stack.base_url)
        env.setenv("HEALTH_HTTP_TIMEOUT_SECONDS", "5")
        emulator.register_lambda("health-gate", load_handler_module("health_gate").lambda_handler)
        # The drain check reads the stack's database, with credentials from Secrets Manager.
        database = stack.database
        secret_arn = emulator.session.client("secretsmanager").create_secret(
            Name="airflow-test/metadata-db",
            SecretString=json.dumps({"username": database.user, "password": ""}),
        )["ARN"]
        for key, value in {
            "DB_HOST": database.host,
            "DB_PORT": str(database.port),
            "DB_NAME": database.name,
            "DB_SECRET_ARN": secret_arn,
            "DB_SSLMODE": "disable",
        }.items():
            env.setenv(key, value)
        emulator.register_lambda("drain-check", load_handler_module("drain_check").lambda_handler)
        for key, value in autoscaler_environment(emulator, stack).items():
            env.setenv(key, value)
        load_handler_module("autoscaler").build_runtime.cache_clear()

        subs = emulator.substitutions
        bridge = EcsBridge(
            ecs=stack.ecs,
            task_definitions={
                subs["MigrateTaskDefinitionArn"]: stack.spec("db-migrate"),
                subs["CreateUserTaskDefinitionArn"]: stack.spec("create-user"),
            },
            services={emulator.service_names[key]: stack.spec(role) for key, role in SERVICE_ROLES.items()},
        )
        # The template with its default parameters has one worker queue: so has WorkerServices.
        workers = (
            f"[{{'queue': 'default', 'serviceName': '{emulator.service_names['worker']}', 'minimum': 0}}]"
        )
        # Hibernate's ReleaseWorkers invokes the autoscaler Lambda.
        emulator.register_lambda("autoscaler", autoscaler_handler(bridge))
        with bridged(bridge):
            yield BridgedEnvironment(
                emulator=emulator,
                stack=stack,
                bridge=bridge,
                bringup_arn=emulator.create_state_machine("bringup.asl.json", {"WorkerServices": workers}),
                hibernate_arn=emulator.create_state_machine(
                    "hibernate.asl.json", {"WorkerServices": workers}
                ),
            )
