"""The Fernet key custom resource (functions/fernet_key/app.py): decide, then act."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from airflow_control_plane.errors import InvalidInputError
from tests.conftest import load_module

pytestmark = pytest.mark.unit

APP = Path(__file__).resolve().parents[2] / "functions" / "fernet_key" / "app.py"
SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:airflow-dev/airflow/fernet-key-AbCdEf"


app = load_module(APP, "fernet_key_app")


class MemoryStore:
    def __init__(self, value: str | None = None, fail_write: bool = False) -> None:
        self.value = value
        self.writes: list[str] = []
        self.fail_write = fail_write

    def read(self, secret_arn: str) -> str | None:
        return self.value

    def write(self, secret_arn: str, value: str) -> None:
        if self.fail_write:
            raise RuntimeError("AccessDenied")
        self.writes.append(value)
        self.value = value


def event(request_type: str = "Create", **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "RequestType": request_type,
        "ResponseURL": "https://cloudformation-custom-resource-response.s3.amazonaws.com/x?sig=1",
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/airflow-dev/1",
        "RequestId": "req-1",
        "LogicalResourceId": "FernetKeyValue",
        "ResourceProperties": {"ServiceToken": "arn:aws:lambda:...", "SecretArn": SECRET_ARN},
    }
    base.update(overrides)
    return base


def fixed_bytes(n: int) -> bytes:
    return bytes(range(n))


def test_new_key_is_32_urlsafe_bytes() -> None:
    # GIVEN fixed randomness WHEN a key is made THEN it is what cryptography.fernet expects
    key = app.new_fernet_key(fixed_bytes)
    assert len(key) == 44
    assert key.endswith("=")
    assert base64.urlsafe_b64decode(key) == bytes(range(32))
    assert app.is_fernet_key(key)


@pytest.mark.parametrize("value", [None, "", "unset", "A" * 43, "A" * 43 + "=" + "=", "+" * 43 + "="])
def test_placeholders_and_malformed_values_are_not_keys(value: str | None) -> None:
    assert not app.is_fernet_key(value)


def test_create_over_the_placeholder_writes_a_key() -> None:
    # GIVEN the secret still holds the template's placeholder
    decision = app.decide("Create", SECRET_ARN, "unset")
    # THEN a new key is written, with a reason
    assert decision.action == "write_new_key"
    assert "placeholder" in decision.reason


def test_update_keeps_a_valid_key() -> None:
    # GIVEN a valid key already in the secret (rotating it would lose stored connections)
    current = app.new_fernet_key(fixed_bytes)
    # WHEN the stack updates THEN the key is kept
    assert app.decide("Update", SECRET_ARN, current).action == "keep"
    assert app.decide("Create", SECRET_ARN, current).action == "keep"


def test_delete_does_nothing_even_without_an_arn() -> None:
    assert app.decide("Delete", None, None).action == "nothing"


def test_create_without_secret_arn_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="SecretArn"):
        app.decide("Create", None, None)


def test_handle_writes_once_and_never_returns_the_key() -> None:
    # GIVEN a store with the placeholder
    store = MemoryStore("unset")
    request = app.CustomResourceRequest.parse(event("Create"))
    # WHEN the resource is created
    body = app.handle(request, store, fixed_bytes)
    # THEN one valid key is stored, and the response carries no key
    assert body["Status"] == "SUCCESS"
    assert len(store.writes) == 1
    assert app.is_fernet_key(store.writes[0])
    assert store.writes[0] not in str(body)
    assert body["Data"] == {}
    assert body["NoEcho"] is True
    assert body["PhysicalResourceId"] == f"{SECRET_ARN}/fernet-key"
    # AND a second create (replacement) keeps it
    again = app.handle(request, store, lambda n: b"\xff" * n)
    assert again["Status"] == "SUCCESS"
    assert len(store.writes) == 1


def test_handle_reports_failure_to_cloudformation() -> None:
    # GIVEN a store that refuses the write
    store = MemoryStore("unset", fail_write=True)
    body = app.handle(app.CustomResourceRequest.parse(event("Create")), store, fixed_bytes)
    # THEN CloudFormation gets FAILED with the reason (the stack rolls back, it never hangs)
    assert body["Status"] == "FAILED"
    assert "AccessDenied" in body["Reason"]


def test_delete_keeps_the_physical_id_and_touches_nothing() -> None:
    store = MemoryStore("whatever")
    request = app.CustomResourceRequest.parse(event("Delete", PhysicalResourceId="kept-id"))
    body = app.handle(request, store, fixed_bytes)
    assert body["Status"] == "SUCCESS"
    assert body["PhysicalResourceId"] == "kept-id"
    assert store.writes == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"RequestType": "Rotate"}, "unknown RequestType"),
        ({"ResponseURL": "http://example.com/x"}, "https"),
        ({"StackId": None}, "lacks"),
    ],
)
def test_malformed_events_are_rejected(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        app.CustomResourceRequest.parse(event(**overrides))
