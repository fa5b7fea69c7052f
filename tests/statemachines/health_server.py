"""A real local HTTP server that plays the api-server's /api/v2/monitor/health.

Scripted answers are served in order; the last one repeats. Bound to 127.0.0.1 on a free
port chosen by the OS; the context manager stops it and joins its thread.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEALTHY = {
    "metadatabase": {"status": "healthy"},
    "scheduler": {"status": "healthy", "latest_scheduler_heartbeat": "2026-11-21T10:00:00+00:00"},
    "triggerer": {"status": "healthy", "latest_triggerer_heartbeat": "2026-11-21T10:00:00+00:00"},
    "dag_processor": {"status": "healthy", "latest_dag_processor_heartbeat": "2026-11-21T10:00:00+00:00"},
}


def with_status(component: str, status: str | None) -> dict[str, object]:
    """HEALTHY with one component changed (None: the component is absent)."""
    document: dict[str, object] = {k: dict(v) for k, v in HEALTHY.items()}
    if status is None:
        document.pop(component)
    else:
        document[component] = {"status": status}
    return document


@dataclass
class Answer:
    status: int = 200
    body: bytes = field(default_factory=lambda: json.dumps(HEALTHY).encode())
    delay_seconds: float = 0.0


@dataclass
class HealthServer:
    url: str
    answers: list[Answer]
    paths: list[str] = field(default_factory=list)

    def play(self, *answers: Answer | dict[str, object]) -> None:
        self.answers[:] = [
            a if isinstance(a, Answer) else Answer(body=json.dumps(a).encode()) for a in answers
        ]


@contextlib.contextmanager
def health_server(*answers: Answer | dict[str, object]) -> Iterator[HealthServer]:
    state = HealthServer(url="", answers=[])
    state.play(*(answers or (HEALTHY,)))
    lock = threading.Lock()
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                state.paths.append(self.path)
                answer = state.answers.pop(0) if len(state.answers) > 1 else state.answers[0]
            if answer.delay_seconds:
                stop.wait(answer.delay_seconds)
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
            except (BrokenPipeError, ConnectionResetError):
                return  # the client gave up (a timeout test): nothing to answer

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="health-server", daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
