"""Run SAM CLI with its Lambda containers on the host's network (`--docker-network host`).

    python -m tests.containers.sam_host_network local invoke --docker-network host ...

SAM CLI creates each Lambda container on Docker's default bridge network, publishes the
emulator's port 8080 on a free host port, and only afterwards connects the container to the
``--docker-network`` it was given, skipping that step for ``host``. On an engine that has no
bridge network (the only kind the gate's engine has: ``dockerd --bridge=none``) such a
container has a loopback interface only: SAM cannot reach the emulator and the function cannot
reach anything. This launcher runs SAM CLI unchanged except for that one step, at the Docker SDK
boundary, for Lambda containers only (SAM's label ``sam.cli.container.type=lambda``):

- the container is created with ``network_mode=host`` and without published ports;
- the emulator listens on 127.0.0.1 at the host port SAM picked for it
  (``--runtime-interface-emulator-address``) and serves the Runtime API on another free local
  port (``--runtime-api-address``), so two functions never collide on the shared host;
- ``SAM_LOCAL_EXTRA_ENV`` (a JSON object) adds variables the template does not declare (SAM's
  ``--env-vars`` only overrides declared ones): the tests use it for ``AWS_ENDPOINT_URL`` alone,
  which routes every boto3 client to the local moto server;
- ``SAM_LOCAL_MOUNTS`` (a JSON object ``{host_path: container_path}``) bind-mounts host folders,
  the way Lambda mounts a function's ``FileSystemConfigs`` (EFS) at its ``LocalMountPath``.
- ``SAM_LOCAL_NAME_PREFIX`` names the containers (SAM leaves them unnamed), so a run that is
  interrupted can remove what it left behind.

Everything else (the rapid image built on the base image, the code and layer mounts, the
environment from the template and ``--env-vars``, the invoke and its result) is SAM CLI's own.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import uuid
from typing import Any

LAMBDA_LABEL = "sam.cli.container.type"
RIE_PORT = "8080"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _json_object(name: str) -> dict[str, str]:
    raw = os.environ.get(name, "")
    if not raw:
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise SystemExit(f"{name} must be a JSON object of strings")
    return {str(k): v for k, v in value.items()}


def host_network_kwargs(
    kwargs: dict[str, Any], extra_env: dict[str, str], mounts: dict[str, str]
) -> dict[str, Any]:
    """The container-create arguments of one SAM Lambda container, moved onto the host network."""
    if (kwargs.get("labels") or {}).get(LAMBDA_LABEL) != "lambda":
        return kwargs
    kwargs = dict(kwargs)
    ports = kwargs.pop("ports", None) or {}
    binding = ports.get(RIE_PORT)
    if not binding:
        raise SystemExit(f"SAM did not publish the emulator's port {RIE_PORT}: {ports!r}")
    host_port = binding[1] if isinstance(binding, tuple) else binding
    kwargs["network_mode"] = "host"
    kwargs["entrypoint"] = [
        *(kwargs.get("entrypoint") or []),
        "--runtime-interface-emulator-address",
        f"127.0.0.1:{host_port}",
        "--runtime-api-address",
        f"127.0.0.1:{_free_port()}",
    ]
    kwargs["environment"] = {**(kwargs.get("environment") or {}), **extra_env}
    volumes = dict(kwargs.get("volumes") or {})
    for host_path, container_path in mounts.items():
        volumes[host_path] = {"bind": container_path, "mode": "rw"}
    kwargs["volumes"] = volumes
    prefix = os.environ.get("SAM_LOCAL_NAME_PREFIX", "")
    if prefix and not kwargs.get("name"):
        kwargs["name"] = f"{prefix}{uuid.uuid4().hex[:12]}"
    return kwargs


def main(argv: list[str]) -> None:
    if "--docker-network" not in argv or argv[argv.index("--docker-network") + 1 :][:1] != ["host"]:
        raise SystemExit("this launcher is for `--docker-network host` only")
    from docker.models.containers import ContainerCollection
    from samcli.cli.main import cli

    extra_env, mounts = _json_object("SAM_LOCAL_EXTRA_ENV"), _json_object("SAM_LOCAL_MOUNTS")
    create = ContainerCollection.create

    def create_on_host(self: ContainerCollection, image: Any, command: Any = None, **kwargs: Any) -> Any:
        return create(self, image, command, **host_network_kwargs(kwargs, extra_env, mounts))

    ContainerCollection.create = create_on_host  # type: ignore[method-assign]
    cli.main(args=argv, prog_name="sam")


if __name__ == "__main__":
    main(sys.argv[1:])
