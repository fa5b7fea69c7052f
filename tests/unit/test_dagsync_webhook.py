"""The webhook: GitHub's signature test vector, rejection before work, ping, branches, replays."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from airflow_control_plane.dagsync.request import SyncRequest
from airflow_control_plane.dagsync.webhook import (
    InMemoryDeliveryStore,
    handle_webhook,
    lower_headers,
    raw_body,
    repository_from_url,
    sign,
    verify_signature,
)
from airflow_control_plane.errors import InvalidInputError
from tests.conftest import load_event

pytestmark = pytest.mark.unit

# The secret the sample events in events/github_*.json are signed with.
EVENTS_SECRET = b"dagsync-test-webhook-secret"


class RecordingDispatcher:
    def __init__(self, fail: bool = False) -> None:
        self.requests: list[SyncRequest] = []
        self.fail = fail

    def dispatch(self, request: SyncRequest) -> None:
        if self.fail:
            raise RuntimeError("invoke failed")
        self.requests.append(request)


def _handle(event: dict[str, Any], store: InMemoryDeliveryStore, dispatcher: RecordingDispatcher, **kw: Any):  # type: ignore[no-untyped-def]
    headers = event["headers"]
    assert isinstance(headers, dict)
    return handle_webhook(
        headers,
        raw_body(event),
        secret=kw.get("secret", EVENTS_SECRET),
        repository="example-org/dags",
        branch="main",
        store=store,
        dispatcher=dispatcher,
        now=1_800_000_000.0,
    )


def test_githubs_published_test_vector_verifies() -> None:
    # GIVEN GitHub's documented secret, payload and signature
    secret, body = b"It's a Secret to Everybody", b"Hello, World!"
    signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    # THEN it verifies, and a one-character change in body or signature does not
    assert sign(secret, body) == signature
    assert verify_signature(secret, body, signature)
    assert not verify_signature(secret, b"Hello, World?", signature)
    assert not verify_signature(secret, body, signature[:-1] + "f")
    assert not verify_signature(secret, body, None)
    assert not verify_signature(secret, body, "")


def test_a_push_to_the_branch_is_handed_off_once() -> None:
    # GIVEN the sample push event, signed with the test secret
    event = load_event("github_push.json")
    store, dispatcher = InMemoryDeliveryStore(), RecordingDispatcher()
    # WHEN it is delivered
    response = _handle(event, store, dispatcher)
    # THEN the sync of its `after` commit is handed off and 202 is answered
    assert response.status == 202
    assert dispatcher.requests == [
        SyncRequest(
            trigger="webhook",
            sha="2222222222222222222222222222222222222222",
            delivery_id="6b2a1e10-c7a1-11f0-8a3e-0123456789ab",
        )
    ]


def test_a_replayed_delivery_does_not_sync_twice() -> None:
    event = load_event("github_push.json")
    store, dispatcher = InMemoryDeliveryStore(), RecordingDispatcher()
    first = _handle(event, store, dispatcher)
    # WHEN GitHub redelivers the same delivery id
    second = _handle(event, store, dispatcher)
    # THEN the second is acknowledged without a second hand-off
    assert (first.status, second.status) == (202, 200)
    assert "already handed off" in second.body["reason"]
    assert len(dispatcher.requests) == 1


def with_delivery(event: dict[str, Any], delivery_id: str) -> dict[str, Any]:
    headers = event["headers"]
    assert isinstance(headers, dict)
    return {**event, "headers": {**headers, "x-github-delivery": delivery_id}}


def test_a_captured_push_resent_with_fresh_delivery_ids_syncs_once() -> None:
    # GIVEN a captured signed push (the delivery id header is not covered by the signature)
    event = load_event("github_push.json")
    store, dispatcher = InMemoryDeliveryStore(), RecordingDispatcher()
    # WHEN it is resent 50 times, each with a new delivery id
    answers = [_handle(with_delivery(event, f"forged-{i}"), store, dispatcher).status for i in range(50)]
    # THEN its commit is handed off once; every resend is acknowledged and ignored
    assert answers == [202] + [200] * 49
    assert len(dispatcher.requests) == 1
    assert list(store.claimed) == ["commit-2222222222222222222222222222222222222222"]


def test_a_new_commit_is_handed_off_even_after_a_replay_of_the_previous_one() -> None:
    store, dispatcher = InMemoryDeliveryStore(), RecordingDispatcher()
    first = load_event("github_push.json")
    assert _handle(first, store, dispatcher).status == 202
    body = str(first["body"]).replace("2222222222222222222222222222222222222222", "3" * 40)
    headers = dict(first["headers"])  # type: ignore[call-overload]
    headers["x-hub-signature-256"] = sign(EVENTS_SECRET, body.encode())
    headers["x-github-delivery"] = "next-delivery"
    assert _handle({**first, "body": body, "headers": headers}, store, dispatcher).status == 202
    assert [r.sha for r in dispatcher.requests] == ["2" * 40, "3" * 40]


@pytest.mark.parametrize("delivery_id", ["abc\n", "abc\ndef", "", "a b", "x" * 101])
def test_a_malformed_delivery_id_is_refused(delivery_id: str) -> None:
    store, dispatcher = InMemoryDeliveryStore(), RecordingDispatcher()
    response = _handle(with_delivery(load_event("github_push.json"), delivery_id), store, dispatcher)
    assert response.status == 400
    assert dispatcher.requests == []


@pytest.mark.parametrize(
    ("url", "repository"),
    [
        ("https://github.com/example-org/dags.git", "example-org/dags"),
        ("https://github.com/example-org/dags", "example-org/dags"),
        ("https://github.com/example-org/dags/", "example-org/dags"),
        ("https://gitlab.com/example-org/dags.git", None),
        ("https://github.com/example-org/dags.git\n", "example-org/dags"),
        ("https://github.com/only-owner", None),
    ],
)
def test_the_repository_is_derived_from_a_github_url(url: str, repository: str | None) -> None:
    assert repository_from_url(url) == repository


def test_headers_that_are_not_a_mapping_count_as_no_headers() -> None:
    assert lower_headers(["x-hub-signature-256"]) == {}
    assert lower_headers({"X-A": "1", "X-B": 2}) == {"x-a": "1"}


@pytest.mark.parametrize(
    "event", [{"body": 42}, {"body": ["a"]}, {"body": "@@not base64@@", "isBase64Encoded": True}]
)
def test_a_body_that_is_not_text_is_a_typed_error(event: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        raw_body(event)


def test_a_tampered_body_is_rejected_with_401_before_any_work() -> None:
    event = load_event("github_push.json")
    event["body"] = str(event["body"]).replace("2222222222", "9999999999")
    store, dispatcher = InMemoryDeliveryStore(), RecordingDispatcher()
    response = _handle(event, store, dispatcher)
    assert response.status == 401
    assert dispatcher.requests == []
    assert store.claimed == {}


def test_a_missing_signature_or_wrong_secret_is_rejected_with_401() -> None:
    event = load_event("github_push.json")
    headers = event["headers"]
    assert isinstance(headers, dict)
    unsigned = {**event, "headers": {k: v for k, v in headers.items() if k != "x-hub-signature-256"}}
    store, dispatcher = InMemoryDeliveryStore(), RecordingDispatcher()
    assert _handle(unsigned, store, dispatcher).status == 401
    assert _handle(event, store, dispatcher, secret=b"another secret").status == 401
    assert dispatcher.requests == []


def test_ping_is_answered_and_nothing_is_synced() -> None:
    store, dispatcher = InMemoryDeliveryStore(), RecordingDispatcher()
    response = _handle(load_event("github_ping.json"), store, dispatcher)
    assert response.status == 200
    assert response.body["action"] == "pong"
    assert dispatcher.requests == []


def test_a_push_to_another_branch_is_ignored() -> None:
    store, dispatcher = InMemoryDeliveryStore(), RecordingDispatcher()
    response = _handle(load_event("github_push_other_branch.json"), store, dispatcher)
    assert response.status == 200
    assert response.body["action"] == "ignore"
    assert "refs/heads/feature-x" in response.body["reason"]
    assert dispatcher.requests == []


def test_a_branch_deletion_is_ignored() -> None:
    body = json.dumps(
        {
            "ref": "refs/heads/main",
            "after": "0" * 40,
            "deleted": True,
            "repository": {"full_name": "example-org/dags"},
        }
    ).encode()
    headers = {
        "X-Hub-Signature-256": sign(EVENTS_SECRET, body),
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "d1",
    }
    dispatcher = RecordingDispatcher()
    response = handle_webhook(
        headers,
        body,
        secret=EVENTS_SECRET,
        repository="example-org/dags",
        branch="main",
        store=InMemoryDeliveryStore(),
        dispatcher=dispatcher,
        now=0.0,
    )
    assert response.body["action"] == "ignore"
    assert dispatcher.requests == []


def test_a_failed_hand_off_releases_the_delivery_for_githubs_redelivery() -> None:
    event = load_event("github_push.json")
    store = InMemoryDeliveryStore()
    # WHEN the hand-off fails
    with pytest.raises(RuntimeError):
        _handle(event, store, RecordingDispatcher(fail=True))
    # THEN the delivery is not remembered, so the redelivery syncs
    retry = RecordingDispatcher()
    assert _handle(event, store, retry).status == 202
    assert len(retry.requests) == 1


def test_a_base64_body_is_decoded_to_the_signed_bytes() -> None:
    event = load_event("github_push.json")
    encoded = {
        **event,
        "body": base64.b64encode(str(event["body"]).encode()).decode(),
        "isBase64Encoded": True,
    }
    store, dispatcher = InMemoryDeliveryStore(), RecordingDispatcher()
    assert _handle(encoded, store, dispatcher).status == 202
