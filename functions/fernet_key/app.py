"""CloudFormation custom resource: give the Airflow Fernet key secret a real key, once.

A Fernet key is 32 random bytes in url-safe base64 (44 characters ending in ``=``).
Secrets Manager's ``GenerateSecretString`` cannot produce that shape, so the template creates
the secret with a placeholder and this resource writes a key into it.

Decide, then act: :func:`decide` looks at the request type and the secret's current value and
returns a :class:`FernetKeyDecision`; :func:`apply` carries it out through a
:class:`SecretStore`. The safe default is "do nothing destructive":

- Create/Update: a secret that already holds a valid Fernet key is kept (rotating it would
  make every stored connection and variable unreadable); otherwise a new key is written.
- Delete: nothing (the template keeps the secret, DeletionPolicy Retain, as the database keeps
  its final snapshot).

The key never appears in a log line, a response or an error message. CloudFormation always
gets an answer (SUCCESS or FAILED with a reason), so a stack never hangs waiting for us.
Randomness is an input (``token_bytes``), so tests pass their own bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from airflow_control_plane.edge import event_object
from airflow_control_plane.errors import InvalidInputError

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

logger = Logger()

_FERNET_KEY = re.compile(r"^[A-Za-z0-9_-]{43}=\Z")
_REQUEST_TYPES = ("Create", "Update", "Delete")
_REQUIRED_FIELDS = ("RequestType", "ResponseURL", "StackId", "RequestId", "LogicalResourceId")
RESPONSE_TIMEOUT_S = 10.0


def is_fernet_key(value: str | None) -> bool:
    """True if ``value`` is 32 bytes in url-safe base64, as ``cryptography.fernet`` expects."""
    if value is None or not _FERNET_KEY.match(value):
        return False
    try:
        return len(base64.urlsafe_b64decode(value.encode("ascii"))) == 32
    except (binascii.Error, ValueError):
        return False


def new_fernet_key(token_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    raw = token_bytes(32)
    if len(raw) != 32:
        raise ValueError(f"token_bytes(32) returned {len(raw)} bytes")
    return base64.urlsafe_b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class CustomResourceRequest:
    request_type: Literal["Create", "Update", "Delete"]
    response_url: str
    stack_id: str
    request_id: str
    logical_resource_id: str
    physical_resource_id: str | None
    secret_arn: str | None

    @classmethod
    def parse(cls, event: Mapping[str, Any]) -> CustomResourceRequest:
        missing = [name for name in _REQUIRED_FIELDS if not isinstance(event.get(name), str)]
        if missing:
            raise InvalidInputError(f"custom resource event lacks {missing}")
        request_type = event["RequestType"]
        if request_type not in _REQUEST_TYPES:
            raise InvalidInputError(f"unknown RequestType {request_type!r}; expected one of {_REQUEST_TYPES}")
        url = str(event["ResponseURL"])
        if not url.startswith("https://"):
            raise InvalidInputError("ResponseURL must be an https:// URL")
        properties = event.get("ResourceProperties") or {}
        secret_arn = properties.get("SecretArn") if isinstance(properties, Mapping) else None
        physical = event.get("PhysicalResourceId")
        return cls(
            request_type=request_type,
            response_url=url,
            stack_id=str(event["StackId"]),
            request_id=str(event["RequestId"]),
            logical_resource_id=str(event["LogicalResourceId"]),
            physical_resource_id=physical if isinstance(physical, str) else None,
            secret_arn=secret_arn if isinstance(secret_arn, str) and secret_arn.strip() else None,
        )


@dataclass(frozen=True)
class FernetKeyDecision:
    action: Literal["write_new_key", "keep", "nothing"]
    reason: str


def decide(request_type: str, secret_arn: str | None, current_value: str | None) -> FernetKeyDecision:
    """Pure: what to do with the secret for this request."""
    if request_type == "Delete":
        return FernetKeyDecision("nothing", "delete: the secret is retained (DeletionPolicy Retain)")
    if secret_arn is None:
        raise InvalidInputError("ResourceProperties.SecretArn is required for Create and Update")
    if is_fernet_key(current_value):
        return FernetKeyDecision(
            "keep", f"{request_type.lower()}: the secret already holds a valid Fernet key"
        )
    return FernetKeyDecision(
        "write_new_key",
        f"{request_type.lower()}: the secret holds no valid Fernet key (placeholder or empty)",
    )


class SecretStore(Protocol):
    def read(self, secret_arn: str) -> str | None: ...

    def write(self, secret_arn: str, value: str) -> None: ...


class SecretsManagerStore:
    """SecretStore on AWS Secrets Manager (the boto3 client is injected)."""

    def __init__(self, client: SecretsManagerClient) -> None:
        self._client = client

    def read(self, secret_arn: str) -> str | None:
        try:
            value = self._client.get_secret_value(SecretId=secret_arn)
        except self._client.exceptions.ResourceNotFoundException:
            return None
        return value.get("SecretString")

    def write(self, secret_arn: str, value: str) -> None:
        self._client.put_secret_value(SecretId=secret_arn, SecretString=value)


def apply(
    decision: FernetKeyDecision,
    secret_arn: str | None,
    store: SecretStore,
    token_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> None:
    if decision.action == "write_new_key":
        assert secret_arn is not None  # decide() refuses a write without an ARN
        store.write(secret_arn, new_fernet_key(token_bytes))


def response_body(
    request: CustomResourceRequest, status: Literal["SUCCESS", "FAILED"], reason: str
) -> dict[str, Any]:
    """The answer CloudFormation expects; it never carries the key (Data is empty, NoEcho)."""
    physical = (
        request.physical_resource_id or f"{request.secret_arn or request.logical_resource_id}/fernet-key"
    )
    return {
        "Status": status,
        "Reason": reason[:1000],
        "PhysicalResourceId": physical,
        "StackId": request.stack_id,
        "RequestId": request.request_id,
        "LogicalResourceId": request.logical_resource_id,
        "NoEcho": True,
        "Data": {},
    }


def send_response(url: str, body: Mapping[str, Any], timeout_s: float = RESPONSE_TIMEOUT_S) -> int:
    data = json.dumps(body).encode("utf-8")
    request = urllib.request.Request(  # noqa: S310 - scheme checked in CustomResourceRequest.parse
        url, data=data, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(data))}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310 - as above
        return int(answer.status)


def handle(
    request: CustomResourceRequest,
    store: SecretStore,
    token_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> dict[str, Any]:
    """Decide, act, and build the response; any failure becomes a FAILED response."""
    try:
        current = (
            store.read(request.secret_arn)
            if request.secret_arn and request.request_type != "Delete"
            else None
        )
        decision = decide(request.request_type, request.secret_arn, current)
        apply(decision, request.secret_arn, store, token_bytes)
    except Exception as exc:  # every failure must reach CloudFormation, or the stack waits an hour
        logger.exception("fernet key resource failed", extra={"request_type": request.request_type})
        return response_body(request, "FAILED", f"{type(exc).__name__}: {exc}")
    logger.info("fernet key resource", extra={"action": decision.action, "reason": decision.reason})
    return response_body(request, "SUCCESS", decision.reason)


def build_store() -> SecretStore:
    import boto3

    return SecretsManagerStore(boto3.client("secretsmanager"))


@logger.inject_lambda_context
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    request = CustomResourceRequest.parse(event_object(event, "fernet-key"))
    body = handle(request, build_store())
    send_response(request.response_url, body)
    return {"Status": body["Status"], "Reason": body["Reason"]}
