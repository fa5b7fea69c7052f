"""The worker-side protection client against an HTTP server speaking the ECS agent's
task-protection protocol (request and answer shapes from the AWS "task scale-in protection
endpoint" page). The real agent runs only inside an ECS task; this is its stand-in."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_control_plane.errors import TransientError
from airflow_control_plane.scaling.protection import AgentProtectionClient, ProtectionAction, ProtectionKeeper

pytestmark = pytest.mark.contract

TASK_ARN = "arn:aws:ecs:us-east-1:123456789012:task/airflow-test/0123456789abcdef0123456789abcdef"


class AgentState:
    def __init__(self) -> None:
        self.enabled = False
        self.expires: datetime | None = None
        self.requests: list[tuple[str, dict[str, Any] | None]] = []
        self.lock = threading.Lock()
        self.fail_with: int | None = None


def _handler(state: AgentState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def _answer(self) -> None:
            body: dict[str, Any] = {
                "protection": {
                    "ProtectionEnabled": state.enabled,
                    "TaskArn": TASK_ARN,
                    **(
                        {"ExpirationDate": state.expires.isoformat().replace("+00:00", "Z")}
                        if state.expires
                        else {}
                    ),
                }
            }
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            with state.lock:
                state.requests.append(("GET", None))
                if not self.path.endswith("/task-protection/v1/state"):
                    self.send_error(404)
                    return
                self._answer()

        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            payload = json.loads(self.rfile.read(length))
            with state.lock:
                state.requests.append(("PUT", payload))
                if state.fail_with:
                    self.send_error(state.fail_with)
                    return
                state.enabled = bool(payload["ProtectionEnabled"])
                minutes = int(payload.get("ExpiresInMinutes", 120))
                state.expires = datetime.now(UTC) + timedelta(minutes=minutes) if state.enabled else None
                self._answer()

    return Handler


@contextmanager
def running_agent() -> Iterator[tuple[str, AgentState]]:
    """An agent stand-in on a free port; yields its ECS_AGENT_URI and its recorded state."""
    state = AgentState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/task-v4", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_protect_release_and_read() -> None:
    with running_agent() as (uri, state):
        client = AgentProtectionClient(uri)
        # WHEN the worker protects itself for 60 minutes
        protected = client.protect(60)
        # THEN the agent got the documented body and the answer parses
        assert state.requests[-1] == ("PUT", {"ProtectionEnabled": True, "ExpiresInMinutes": 60})
        assert protected.protected
        assert protected.expires_at is not None
        assert protected.expires_at > datetime.now(UTC) + timedelta(minutes=59)
        assert client.get().protected
        # WHEN it releases
        assert client.release().protected is False
        assert state.requests[-1] == ("PUT", {"ProtectionEnabled": False})


def test_agent_errors_are_transient() -> None:
    with running_agent() as (uri, state):
        state.fail_with = 500
        with pytest.raises(TransientError, match="task protection PUT"):
            AgentProtectionClient(uri).protect(60)


def test_keeper_against_the_agent() -> None:
    with running_agent() as (uri, state):
        consuming = [True]
        keeper = ProtectionKeeper(AgentProtectionClient(uri), lambda: 0, consuming=lambda: consuming[0])
        # protected from the start, idle or not, and kept
        assert keeper.tick().action is ProtectionAction.PROTECT
        assert state.enabled is True
        assert keeper.tick().action is ProtectionAction.NONE
        # drained (not consuming) and released by the scaler: the keeper does not take it back
        consuming[0] = False
        AgentProtectionClient(uri).release()
        assert keeper.tick().action is ProtectionAction.NONE
        assert state.enabled is False
