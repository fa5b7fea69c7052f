"""Celery remote control (what the scale-in drain uses) over SQS, with kombu 5.7 and celery 5.6:
real Celery workers of the Airflow runtime against moto's SQS and SNS server.

What it shows (README "SQS broker"):

1. As shipped, with kombu's SNS fanout switched on (``supports_fanout``): the worker runs no
   remote-control mailbox (kombu's SQS transport declares only direct exchanges, and Celery's
   worker includes its Control step only for a transport with fanout), creates no pidbox queue
   and no SNS subscription, and a ``ping`` gets no answer. :class:`KombuWorkerControl` refuses
   at once with :class:`RemoteControlUnavailable`.
2. Even with the transport made to declare fanout (a patch in the worker's app module, not
   something the project ships): the broadcast reaches the worker through the SNS topic
   ``<prefix>celery-pidbox`` and its subscribed queue ``<prefix><node>-celery-pidbox``, but the
   reply is lost: the worker publishes it to the direct exchange ``reply.celery.pidbox``, whose
   binding to the caller's reply queue exists only in the caller's process (kombu's virtual
   transports keep bindings in memory; Redis keeps them in Redis), so the worker finds no queue.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from airflow_control_plane.poll import poll_until
from airflow_control_plane.scaling.drain import KombuWorkerControl, RemoteControlUnavailable
from tests.harness import moto_server

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIME_PY = REPO_ROOT / ".venv" / "bin" / "python"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _options(prefix: str) -> dict[str, Any]:
    return {
        "region": "us-east-1",
        "is_secure": False,
        "queue_name_prefix": prefix,
        "wait_time_seconds": 1,
        "polling_interval": 0.2,
        "supports_fanout": True,
    }


def _app(folder: Path, endpoint: str, prefix: str, *, declare_fanout: bool) -> Path:
    port = endpoint.rsplit(":", 1)[1]
    patch = (
        "from kombu.transport import SQS\n"
        "SQS.Transport.implements = SQS.Transport.implements.extend(\n"
        "    exchange_type=frozenset(['direct', 'fanout']))\n"
        if declare_fanout
        else ""
    )
    (folder / "rc_app.py").write_text(
        patch
        + textwrap.dedent(
            f"""
            from pathlib import Path
            from celery import Celery

            app = Celery("rc_app", broker="sqs://127.0.0.1:{port}/")
            app.conf.broker_transport_options = {_options(prefix)!r}
            app.conf.task_default_queue = "default"

            @app.task
            def touch(name):
                Path("{folder}", name).write_text("done")
            """
        )
    )
    return folder


def _worker(folder: Path, node: str) -> subprocess.Popen[str]:
    log = (folder / "worker.log").open("w")
    return subprocess.Popen(
        [str(RUNTIME_PY), "-m", "celery", "-A", "rc_app", "worker", "-Q", "default", "-c", "1",
         "--pool", "threads", "-n", node, "--without-gossip", "--without-mingle", "--loglevel", "DEBUG"],
        cwd=folder, env=_env(folder), stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _env(folder: Path) -> dict[str, str]:
    return {**os.environ, **CREDENTIALS, "PYTHONPATH": str(folder)}


def _run(folder: Path, code: str) -> str:
    out = subprocess.run(
        [str(RUNTIME_PY), "-c", code],
        cwd=folder,
        env=_env(folder),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _ready(folder: Path, name: str) -> None:
    """A task sent and run: the worker consumes (its start-up is over)."""
    _run(folder, f"from rc_app import touch\ntouch.delay('{name}')")
    poll_until(lambda: (folder / name).exists(), timeout_s=90, interval_s=0.5, what="the worker ran a task")


def _ping(folder: Path, timeout_s: float) -> tuple[list[Any], float, float]:
    """``celery inspect ping`` as the drain sends it: the replies, how long it waited, and
    the wall-clock time it was sent."""
    code = (
        "import json, time\nfrom rc_app import app\nsent = time.time()\nt = time.monotonic()\n"
        f"r = app.control.ping(timeout={timeout_s})\nprint(json.dumps([r, time.monotonic() - t, sent]))"
    )
    replies, took, sent = json.loads(_run(folder, code))
    return replies, float(took), float(sent)


def _queue_names(sqs: Any, prefix: str) -> list[str]:
    return sorted(q.rsplit("/", 1)[1] for q in sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", []))


def _stop(worker: subprocess.Popen[str]) -> None:
    worker.terminate()
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def test_workers_on_sqs_run_no_remote_control_and_the_drain_refuses_at_once(
    endpoint: str, tmp_path: Path
) -> None:
    # GIVEN a real Celery worker on SQS with kombu's SNS fanout switched on
    prefix = f"rc{uuid.uuid4().hex[:6]}-"
    folder = _app(tmp_path, endpoint, prefix, declare_fanout=False)
    worker = _worker(folder, "worker-1@host")
    try:
        _ready(folder, "first")
        # WHEN it is pinged through the broker for 3 s
        replies, _, _ = _ping(folder, 3.0)
        # THEN nothing answers: it made no pidbox queue and subscribed nothing
        assert replies == []
        assert _queue_names(_client("sqs", endpoint), prefix) == [f"{prefix}default"]
        subscriptions = _client("sns", endpoint).list_subscriptions()["Subscriptions"]
        assert [s for s in subscriptions if prefix in s["TopicArn"]] == []
        # AND the drain's control refuses before any broker call
        control = KombuWorkerControl(f"sqs://{endpoint.split('://')[1]}/", transport_options=_options(prefix))
        started = time.monotonic()
        with pytest.raises(RemoteControlUnavailable, match="unavailable on the SQS broker"):
            control.busy("default")
        assert time.monotonic() - started < 1.0
    finally:
        _stop(worker)


def test_even_with_fanout_declared_the_broadcast_arrives_but_the_reply_is_lost(
    endpoint: str, tmp_path: Path
) -> None:
    # GIVEN a worker whose SQS transport is patched to declare fanout exchanges
    prefix = f"rf{uuid.uuid4().hex[:6]}-"
    folder = _app(tmp_path, endpoint, prefix, declare_fanout=True)
    worker = _worker(folder, "worker-1@host")
    try:
        _ready(folder, "first")
        # THEN it subscribed its pidbox queue to the SNS topic of Celery's mailbox
        sqs, sns = _client("sqs", endpoint), _client("sns", endpoint)
        names = _queue_names(sqs, prefix)
        assert names == [f"{prefix}default", f"{prefix}worker-1_host-celery-pidbox"]
        subscriptions = [s for s in sns.list_subscriptions()["Subscriptions"] if prefix in s["TopicArn"]]
        pairs = [(s["TopicArn"].rsplit(":", 1)[1], s["Endpoint"].rsplit(":", 1)[1]) for s in subscriptions]
        assert pairs == [(f"{prefix}celery-pidbox", f"{prefix}worker-1_host-celery-pidbox")]
        # WHEN it is pinged for 5 s
        replies, took, sent = _ping(folder, 5.0)
        # THEN the ping reached it (its log says so) but no reply came back
        log = (folder / "worker.log").read_text()
        received = re.search(
            r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): DEBUG/MainProcess\] pidbox received method ping", log
        )
        assert received, log[-3000:]
        assert replies == []
        at = datetime.strptime(received.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        print(
            f"ping over SNS -> SQS: reached the worker {at - sent:.2f} s after it was sent; "
            f"no reply in {took:.1f} s"
        )
        # AND the caller's reply queue was deleted with its consumer: none is left behind
        after = _queue_names(sqs, prefix)
        assert after == names
    finally:
        _stop(worker)
