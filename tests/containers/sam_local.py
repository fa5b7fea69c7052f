"""`sam build` and `sam local invoke` of the template's functions, for the container tests.

Which sample event in events/ targets which function is written down here once
(:data:`EVENT_FUNCTIONS`); :func:`check_event_map` fails when an event or a function of the
template is in neither list, so a new function or event cannot silently go untested.

Each invoke runs SAM CLI through :mod:`tests.containers.sam_host_network` (the Lambda
container on the host's network, the only network the gate's engine has) with
``--skip-pull-image`` (the base image is present: the official one or the test stand-in
built by .ci/standin-lambda-base.sh), ``--docker-network host`` and ``--env-vars``. Only
variables the template declares for the function can be given that way (SAM ignores others);
:meth:`SamLocal.invoke` refuses any other name, so a variable renamed in the template fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import EVENTS_DIR, REPO_ROOT

LAMBDA_BASE_IMAGE = "public.ecr.aws/lambda/python:3.11"
# SAM names the rapid images it builds on the base image (one per set of layers) like this.
RAPID_REPOSITORY = "samcli/lambda-python"

# Sample event -> the function it is for.
EVENT_FUNCTIONS: dict[str, str] = {
    "autoscaler_dry_run.json": "AutoscalerFunction",
    "autoscaler_schedule.json": "AutoscalerFunction",
    "bringup_validate.json": "BringUpValidateFunction",
    "hibernate_validate.json": "BringUpValidateFunction",
    "dag_sync_schedule.json": "DagSyncFunction",
    "drain_check.json": "DrainCheckFunction",
    "github_ping.json": "GithubWebhookFunction",
    "github_push.json": "GithubWebhookFunction",
    "github_push_other_branch.json": "GithubWebhookFunction",
    "health_gate.json": "HealthGateFunction",
    "fernet_key_create.json": "FernetKeyFunction",
    "service_counts_update.json": "ServiceCountsFunction",
}
# Execution inputs of the state machines (run by tests/statemachines), not Lambda events.
STATE_MACHINE_INPUTS = frozenset(
    {"bringup.json", "bringup_invalid.json", "bringup_minimal.json", "hibernate.json", "hibernate_force.json"}
)


def template_functions(translated: Mapping[str, Any]) -> dict[str, set[str]]:
    """Each Lambda function of the translated template -> the variables it declares."""
    functions: dict[str, set[str]] = {}
    for logical_id, resource in translated["Resources"].items():
        if resource.get("Type") == "AWS::Lambda::Function":
            variables = (resource["Properties"].get("Environment") or {}).get("Variables") or {}
            functions[logical_id] = set(variables)
    return functions


def function_mounts(translated: Mapping[str, Any], function: str) -> list[str]:
    """The ``LocalMountPath`` of each file system (EFS) the function mounts."""
    configs = translated["Resources"][function]["Properties"].get("FileSystemConfigs") or []
    return [str(config["LocalMountPath"]) for config in configs]


def check_event_map(translated: Mapping[str, Any]) -> None:
    functions = template_functions(translated)
    events = {path.name for path in EVENTS_DIR.glob("*.json")}
    unmapped = events - set(EVENT_FUNCTIONS) - STATE_MACHINE_INPUTS
    missing = (set(EVENT_FUNCTIONS) | STATE_MACHINE_INPUTS) - events
    unknown = set(EVENT_FUNCTIONS.values()) - set(functions)
    untested = set(functions) - set(EVENT_FUNCTIONS.values())
    problems = {
        "events in neither EVENT_FUNCTIONS nor STATE_MACHINE_INPUTS": unmapped,
        "listed events missing from events/": missing,
        "functions not in the template": unknown,
        "template functions without a sample event": untested,
    }
    found = {what: sorted(names) for what, names in problems.items() if names}
    if found:
        raise AssertionError(f"events/ and the template disagree with tests/containers/sam_local.py: {found}")


@dataclass(frozen=True)
class Invocation:
    function: str
    event: str
    payload: Any
    stdout: str
    stderr: str

    @property
    def error_type(self) -> str | None:
        if isinstance(self.payload, dict) and "errorType" in self.payload:
            return str(self.payload["errorType"])
        return None

    def body(self) -> Any:
        """The JSON body of a Function URL answer."""
        assert isinstance(self.payload, dict), self.payload
        return json.loads(self.payload["body"])


@dataclass(frozen=True)
class SamLocal:
    build_dir: Path
    declared: Mapping[str, set[str]]
    env: Mapping[str, str]
    # Every Lambda container of this run is named with it (see sam_host_network).
    name_prefix: str = f"acp-sam-local-{os.getpid()}-"

    def remove_containers(self) -> None:
        """Remove the Lambda containers this run left behind (SAM removes them after each invoke)."""
        names = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"name={self.name_prefix}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        if names:
            subprocess.run(["docker", "rm", "-f", *names], capture_output=True, check=False)

    @property
    def template(self) -> Path:
        return self.build_dir / "template.yaml"

    def _environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)
        env = {**os.environ, **self.env, **(extra or {}), "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
        # SAM CLI's own modules are compiled once into the dev environment, not at every run
        # (measured here: 12 s -> 4 s per start on a busy 2-core machine).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def _sam(
        self, *args: str, timeout: float, extra: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = self._environment(extra)
        return subprocess.run(
            [sys.executable, "-m", "tests.containers.sam_host_network", *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def build(self, cache_dir: Path) -> None:
        # `sam build` needs no container: run SAM CLI directly (same flags as `make sam`).
        bin_dir = Path(sys.executable).parent
        proc = subprocess.run(
            [
                str(bin_dir / "sam"),
                "build",
                "--template",
                str(REPO_ROOT / "template.yaml"),
                "--build-dir",
                str(self.build_dir),
                "--cached",
                "--cache-dir",
                str(cache_dir),
            ],
            cwd=REPO_ROOT,
            env=self._environment(),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(f"sam build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        # Bytecode for the layer and the functions, compiled once here rather than in every
        # Lambda container's cold start: on a busy 2-core machine that compile alone can exceed
        # a function's timeout (the webhook's is 10 s). Same code, same imports.
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(self.build_dir)], check=True, timeout=600
        )

    def invoke(
        self,
        function: str,
        event: str | Path,
        variables: Mapping[str, str],
        *,
        endpoint_url: str,
        mounts: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        timeout: float = 180,
    ) -> Invocation:
        """`sam local invoke` of ``function`` with a sample event (a name in events/ or a path)."""
        undeclared = set(variables) - self.declared[function]
        if undeclared:
            raise AssertionError(f"{function} declares no {sorted(undeclared)}: --env-vars would be ignored")
        event_path = EVENTS_DIR / event if isinstance(event, str) else event
        env_file = self.build_dir / f"env-{function}.json"
        env_file.write_text(json.dumps({function: dict(variables)}))
        proc = self._sam(
            "local",
            "invoke",
            "--template",
            str(self.template),
            "--skip-pull-image",
            "--docker-network",
            "host",
            "--env-vars",
            str(env_file),
            "--event",
            str(event_path),
            function,
            timeout=timeout,
            extra={
                # Not a template variable: the local endpoint every boto3 client honours.
                "SAM_LOCAL_EXTRA_ENV": json.dumps({"AWS_ENDPOINT_URL": endpoint_url, **(extra_env or {})}),
                "SAM_LOCAL_MOUNTS": json.dumps(dict(mounts or {})),
                "SAM_LOCAL_NAME_PREFIX": self.name_prefix,
                # SAM CLI itself asks STS for the account id before each invoke (retrying for
                # seconds where AWS is unreachable): its question goes to the same local endpoint.
                "AWS_ENDPOINT_URL_STS": endpoint_url,
            },
        )
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        if proc.returncode != 0 or not lines:
            raise AssertionError(
                f"sam local invoke {function} -e {event_path.name} exited {proc.returncode}:\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
            )
        try:
            payload = json.loads(lines[-1])
        except ValueError as exc:
            raise AssertionError(
                f"{function}: the invoke result is not JSON: {lines[-1]!r}\n{proc.stderr[-3000:]}"
            ) from exc
        return Invocation(function, event_path.name, payload, proc.stdout, proc.stderr)
