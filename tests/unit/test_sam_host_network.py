"""The one change the sam local launcher makes to SAM CLI's Lambda containers."""

from __future__ import annotations

import pytest

from tests.containers.sam_host_network import host_network_kwargs

pytestmark = pytest.mark.unit

SAM_KWARGS = {
    "command": [],
    "working_dir": "/var/task",
    "volumes": {"/build/Fn": {"bind": "/var/task", "mode": "ro,delegated"}},
    "environment": {"AWS_LAMBDA_FUNCTION_HANDLER": "app.lambda_handler"},
    "ports": {"8080": ("127.0.0.1", 5123)},
    "entrypoint": ["/var/rapid/aws-lambda-rie", "--log-level", "error"],
    "labels": {"sam.cli.container.type": "lambda"},
}


def test_a_lambda_container_moves_onto_the_host_network_at_the_port_sam_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAM_LOCAL_NAME_PREFIX", "acp-sam-local-test-")
    # WHEN SAM's arguments for a Lambda container pass through the launcher
    kwargs = host_network_kwargs(
        dict(SAM_KWARGS), {"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}, {"/efs": "/mnt/dags"}
    )
    # THEN it runs on the host network, publishes nothing, and the emulator listens where SAM calls it
    assert kwargs["network_mode"] == "host"
    assert "ports" not in kwargs
    entrypoint = kwargs["entrypoint"]
    assert entrypoint[:3] == SAM_KWARGS["entrypoint"]
    assert entrypoint[entrypoint.index("--runtime-interface-emulator-address") + 1] == "127.0.0.1:5123"
    assert entrypoint[entrypoint.index("--runtime-api-address") + 1].startswith("127.0.0.1:")
    # AND the extra variable and the mount are added to SAM's own, which are kept
    assert kwargs["environment"] == {
        "AWS_LAMBDA_FUNCTION_HANDLER": "app.lambda_handler",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
    }
    assert kwargs["volumes"]["/build/Fn"]["bind"] == "/var/task"
    assert kwargs["volumes"]["/efs"] == {"bind": "/mnt/dags", "mode": "rw"}
    assert kwargs["name"].startswith("acp-sam-local-test-")


def test_other_containers_are_left_alone() -> None:
    build = {**SAM_KWARGS, "labels": {"sam.cli.container.type": "build"}}
    assert host_network_kwargs(dict(build), {"X": "1"}, {}) == build


def test_a_lambda_container_without_the_emulator_port_is_refused() -> None:
    with pytest.raises(SystemExit, match="8080"):
        host_network_kwargs({**SAM_KWARGS, "ports": {}}, {}, {})
