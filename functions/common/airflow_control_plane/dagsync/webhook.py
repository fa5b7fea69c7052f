"""GitHub push webhooks: signature check, parsing, the accept/ignore decision and replay store.

The signature is checked over the raw body bytes with a constant-time compare before
anything else; a bad or missing signature gets 401 and no work. ``ping`` is answered; pushes
to other repositories and branches, tag pushes and branch deletions are ignored. Replays are
keyed on the commit from the signed body, never on the unsigned ``X-GitHub-Delivery`` header:
a commit already handed off (published or in flight) is acknowledged without a second sync,
so a captured signed push resent with fresh delivery ids causes at most one sync. Accepted
pushes are handed off to a ``SyncDispatcher`` (asynchronous Lambda invoke on AWS) so the reply
is fast. The scheduled sync remains the safety net for a commit whose hand-off was dropped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from airflow_control_plane.dagsync.request import SyncRequest
from airflow_control_plane.errors import InvalidInputError, TransientError

SIGNATURE_HEADER = "x-hub-signature-256"
EVENT_HEADER = "x-github-event"
DELIVERY_HEADER = "x-github-delivery"
# fullmatch, never `$`: `$` also matches before a trailing newline.
_DELIVERY_RE = re.compile(r"[A-Za-z0-9-]{1,100}")
_GITHUB_URL_RE = re.compile(r"https://github\.com/([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+?)(?:\.git)?/?")
ZERO_SHA = "0" * 40


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """True only if ``header`` is ``sha256=<hex HMAC-SHA256(secret, body)>`` (constant-time compare)."""
    if not header or not secret:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().encode())


class WebhookAction(StrEnum):
    SYNC = "sync"
    PONG = "pong"
    IGNORE = "ignore"


@dataclass(frozen=True)
class WebhookDecision:
    action: WebhookAction
    reason: str
    request: SyncRequest | None = None


@dataclass(frozen=True)
class WebhookResponse:
    status: int
    body: dict[str, Any]


class DeliveryStore(Protocol):
    def claim(self, delivery_id: str, now: float) -> bool: ...

    def unclaim(self, delivery_id: str) -> None: ...


class SyncDispatcher(Protocol):
    def dispatch(self, request: SyncRequest) -> None: ...


def commit_key(sha: str) -> str:
    """The replay store's key: the pushed commit (signed), not the delivery id (unsigned)."""
    return f"commit-{sha}"


def repository_from_url(url: str) -> str | None:
    """``owner/name`` of a GitHub HTTPS clone URL, or None for any other URL."""
    match = _GITHUB_URL_RE.fullmatch(url.strip())
    return match.group(1) if match else None


def lower_headers(headers: object) -> dict[str, str]:
    """Header names in lower case; anything but a mapping of strings is no headers at all."""
    if not isinstance(headers, Mapping):
        return {}
    return {str(k).lower(): v for k, v in headers.items() if isinstance(v, str)}


def raw_body(event: Mapping[str, Any]) -> bytes:
    """The exact bytes GitHub signed, from a Function URL (payload 2.0) event."""
    body = event.get("body") or ""
    if not isinstance(body, str):
        raise InvalidInputError(f"event body must be a string, got {type(body).__name__}")
    if event.get("isBase64Encoded") is True:
        try:
            return base64.b64decode(body, validate=True)
        except ValueError:
            raise InvalidInputError("event body is not valid base64") from None
    return body.encode()


def decide_webhook(
    event_name: str, delivery_id: str, payload: Mapping[str, Any], *, repository: str, branch: str
) -> WebhookDecision:
    """Pure: what to do with a verified delivery."""
    if event_name == "ping":
        return WebhookDecision(WebhookAction.PONG, "ping answered")
    if event_name != "push":
        return WebhookDecision(WebhookAction.IGNORE, f"event {event_name!r} is not a push")
    full_name = str((payload.get("repository") or {}).get("full_name", ""))
    if repository and full_name.lower() != repository.lower():
        return WebhookDecision(WebhookAction.IGNORE, f"push to {full_name!r}, not {repository!r}")
    ref = str(payload.get("ref", ""))
    if ref != f"refs/heads/{branch}":
        return WebhookDecision(WebhookAction.IGNORE, f"push to {ref!r}, not refs/heads/{branch}")
    after = str(payload.get("after", ""))
    if payload.get("deleted") or after == ZERO_SHA:
        return WebhookDecision(WebhookAction.IGNORE, f"branch {branch} was deleted: nothing to publish")
    if not re.fullmatch(r"[0-9a-f]{40}", after):
        raise InvalidInputError("push payload has no valid 'after' commit id")
    request = SyncRequest(trigger="webhook", sha=after, delivery_id=delivery_id)
    return WebhookDecision(WebhookAction.SYNC, f"push of {after[:12]} to {branch}", request)


def handle_webhook(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: bytes,
    repository: str,
    branch: str,
    store: DeliveryStore,
    dispatcher: SyncDispatcher,
    now: float,
) -> WebhookResponse:
    """Verify, parse, decide, dedupe and hand off. Nothing happens before the signature is valid."""
    hdrs = lower_headers(headers)
    if not verify_signature(secret, body, hdrs.get(SIGNATURE_HEADER)):
        return WebhookResponse(401, {"message": "invalid or missing X-Hub-Signature-256"})
    delivery_id = hdrs.get(DELIVERY_HEADER, "")
    if not _DELIVERY_RE.fullmatch(delivery_id):
        return WebhookResponse(400, {"message": "missing or malformed X-GitHub-Delivery"})
    try:
        payload = json.loads(body)
        decision = decide_webhook(
            hdrs.get(EVENT_HEADER, ""), delivery_id, payload, repository=repository, branch=branch
        )
    except (ValueError, AttributeError, InvalidInputError) as exc:
        return WebhookResponse(400, {"message": f"malformed payload: {type(exc).__name__}"})
    if decision.action is not WebhookAction.SYNC or decision.request is None:
        return WebhookResponse(200, {"action": decision.action.value, "reason": decision.reason})
    sha = str(decision.request.sha)
    key = commit_key(sha)
    if not store.claim(key, now):
        reason = f"commit {sha[:12]} already handed off (delivery {delivery_id} not synced again)"
        return WebhookResponse(200, {"action": "ignore", "reason": reason})
    try:
        dispatcher.dispatch(decision.request)
    except Exception:
        store.unclaim(key)  # let GitHub's redelivery try again
        raise
    return WebhookResponse(202, {"action": "sync", "reason": decision.reason, "sha": decision.request.sha})


class FileDeliveryStore:
    """Replay store on the target filesystem: one O_EXCL-created file per delivery id."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def claim(self, delivery_id: str, now: float) -> bool:
        self._dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self._dir / delivery_id, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, f"{now:.3f}\n".encode())
        finally:
            os.close(fd)
        return True

    def unclaim(self, delivery_id: str) -> None:
        (self._dir / delivery_id).unlink(missing_ok=True)

    def prune(self, older_than: float) -> int:
        """Forget deliveries claimed before ``older_than`` (GitHub redelivers within days)."""
        removed = 0
        if not self._dir.exists():
            return 0
        for entry in os.scandir(self._dir):
            if entry.stat().st_mtime < older_than:
                os.unlink(entry.path)
                removed += 1
        return removed


class DynamoDbDeliveryStore:
    """Replay store on AWS: one DynamoDB item per key, claimed with a conditional put.

    The webhook's own table (not the DAGs file system): the public function needs no VPC and
    no write access to anything Airflow reads. Items expire after ``ttl_s``; an expired item
    can be claimed again at once (DynamoDB's TTL sweep is lazy, so the condition checks it).
    """

    def __init__(self, client: Any, table: str, ttl_s: float) -> None:
        self._client = client
        self._table = table
        self._ttl_s = ttl_s

    def claim(self, key: str, now: float) -> bool:
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": key},
                    "claimed_at": {"N": f"{now:.3f}"},
                    "expires_at": {"N": str(int(now + self._ttl_s))},
                },
                ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
                ExpressionAttributeValues={":now": {"N": str(int(now))}},
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def unclaim(self, key: str) -> None:
        self._client.delete_item(TableName=self._table, Key={"pk": {"S": key}})


class InMemoryDeliveryStore:
    def __init__(self) -> None:
        self.claimed: dict[str, float] = {}

    def claim(self, delivery_id: str, now: float) -> bool:
        if delivery_id in self.claimed:
            return False
        self.claimed[delivery_id] = now
        return True

    def unclaim(self, delivery_id: str) -> None:
        self.claimed.pop(delivery_id, None)


class LambdaAsyncDispatcher:
    """Hand the sync to the sync Lambda with an asynchronous invoke (returns in milliseconds)."""

    def __init__(self, client: Any, function_name: str) -> None:
        self._client = client
        self._function = function_name

    def dispatch(self, request: SyncRequest) -> None:
        response = self._client.invoke(
            FunctionName=self._function,
            InvocationType="Event",
            Payload=json.dumps(request.to_payload()).encode(),
        )
        if response.get("StatusCode") != 202:
            raise TransientError(f"async invoke of {self._function} returned {response.get('StatusCode')}")


class ThreadDispatcher:
    """Local hand-off: run the sync in a background thread (the local runtime and the bench)."""

    def __init__(self, run: Callable[[SyncRequest], object]) -> None:
        self._run = run
        self.threads: list[threading.Thread] = []

    def dispatch(self, request: SyncRequest) -> None:
        thread = threading.Thread(target=self._run, args=(request,), name="dagsync", daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self, timeout_s: float) -> None:
        for thread in self.threads:
            thread.join(timeout_s)
