"""The Fernet key custom resource against moto's Secrets Manager and a real HTTP response URL."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import load_module

pytestmark = pytest.mark.contract

APP = Path(__file__).resolve().parents[2] / "functions" / "fernet_key" / "app.py"


app = load_module(APP, "fernet_key_app_contract")


@pytest.fixture
def secrets_client(moto_aws: None) -> Any:
    return boto3.client("secretsmanager", region_name="us-east-1")


class _Recorder(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], bytes]] = []  # noqa: RUF012 - per-test reset below

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        type(self).received.append((self.path, dict(self.headers), self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


@pytest.fixture
def response_server() -> Iterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    _Recorder.received = []
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/response?sig=abc", _Recorder.received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_create_then_update_against_secrets_manager(secrets_client: Any) -> None:
    # GIVEN the secret as the template creates it (placeholder value)
    arn = secrets_client.create_secret(Name="airflow-dev/airflow/fernet-key", SecretString="unset")["ARN"]
    store = app.SecretsManagerStore(secrets_client)
    request = app.CustomResourceRequest(
        request_type="Create",
        response_url="https://example.invalid/r",
        stack_id="stack",
        request_id="r1",
        logical_resource_id="FernetKeyValue",
        physical_resource_id=None,
        secret_arn=arn,
    )
    # WHEN the resource is created
    body = app.handle(request, store)
    # THEN the secret holds a valid Fernet key
    first = secrets_client.get_secret_value(SecretId=arn)["SecretString"]
    assert body["Status"] == "SUCCESS"
    assert app.is_fernet_key(first)
    # AND an update keeps exactly that key
    update = app.CustomResourceRequest(**{**request.__dict__, "request_type": "Update"})
    assert app.handle(update, store)["Status"] == "SUCCESS"
    assert secrets_client.get_secret_value(SecretId=arn)["SecretString"] == first


def test_missing_secret_is_reported_as_failure(secrets_client: Any) -> None:
    # GIVEN a SecretArn that does not exist
    store = app.SecretsManagerStore(secrets_client)
    request = app.CustomResourceRequest(
        "Create",
        "https://example.invalid/r",
        "stack",
        "r1",
        "FernetKeyValue",
        None,
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope-AbCdEf",
    )
    # WHEN it runs THEN CloudFormation is told FAILED (not left waiting)
    body = app.handle(request, store)
    assert body["Status"] == "FAILED"


def test_response_is_put_to_the_presigned_url(
    response_server: tuple[str, list[tuple[str, dict[str, str], bytes]]],
) -> None:
    url, received = response_server
    # GIVEN a response body WHEN it is sent
    status = app.send_response(url, {"Status": "SUCCESS", "Reason": "ok", "Data": {}}, timeout_s=5)
    # THEN one PUT arrives with an empty content type (as the presigned URL requires) and the JSON
    assert status == 200
    assert len(received) == 1
    path, headers, raw = received[0]
    assert path == "/response?sig=abc"
    assert headers.get("Content-Type") == ""
    assert json.loads(raw)["Status"] == "SUCCESS"
