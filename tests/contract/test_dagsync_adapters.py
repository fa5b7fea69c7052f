"""DAG sync adapters against their real counterparts: moto for AWS, the real filesystem for locks."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.stub import Stubber

from airflow_control_plane.dagsync.credentials import parse_secret
from airflow_control_plane.dagsync.errors import LockLostError, SyncBusyError
from airflow_control_plane.dagsync.events import RELEASE_PUBLISHED, EventBridgePublisher
from airflow_control_plane.dagsync.lock import LOCK_NAME, FileLock, Identity, break_lease
from airflow_control_plane.dagsync.request import SyncRequest
from airflow_control_plane.dagsync.webhook import FileDeliveryStore, LambdaAsyncDispatcher
from airflow_control_plane.errors import ConfigError, TransientError
from airflow_control_plane.secret_source import SecretsManagerSecret

pytestmark = pytest.mark.contract

REGION = "us-east-1"


def test_eventbridge_publisher_raises_when_an_entry_fails() -> None:
    client = botocore.session.get_session().create_client("events", region_name=REGION)
    with Stubber(client) as stub:
        stub.add_response(
            "put_events",
            {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "Throttling", "ErrorMessage": "slow"}]},
        )
        with pytest.raises(TransientError, match="Throttling"):
            EventBridgePublisher(client, "airflow").publish(RELEASE_PUBLISHED, {})


@pytest.mark.usefixtures("moto_aws")
def test_secrets_manager_secret_reads_a_token_and_hides_missing_secret_details() -> None:
    client = boto3.client("secretsmanager", region_name=REGION)
    arn = client.create_secret(Name="dagsync/git-token", SecretString='{"token": "glpat-abc"}')["ARN"]
    creds = parse_secret(SecretsManagerSecret(client, arn).read(), default_username="oauth2")
    assert (creds.username, creds.password) == ("oauth2", "glpat-abc")
    with pytest.raises(ConfigError, match="cannot read secret dagsync/missing: ResourceNotFoundException"):
        SecretsManagerSecret(client, "dagsync/missing").read()


def test_lambda_async_dispatcher_invokes_with_event_invocation_type() -> None:
    # GIVEN a Lambda client checked against botocore's API model
    client = botocore.session.get_session().create_client("lambda", region_name=REGION)
    request = SyncRequest(trigger="webhook", sha="b" * 40, delivery_id="d-1")
    with Stubber(client) as stub:
        stub.add_response(
            "invoke",
            {"StatusCode": 202},
            {
                "FunctionName": "dag-sync",
                "InvocationType": "Event",
                "Payload": json.dumps(request.to_payload()).encode(),
            },
        )
        stub.add_response("invoke", {"StatusCode": 500})
        # WHEN a push is handed off THEN it is an asynchronous invoke with the request as payload
        LambdaAsyncDispatcher(client, "dag-sync").dispatch(request)
        # AND a refused invoke is an error, not silence
        with pytest.raises(TransientError):
            LambdaAsyncDispatcher(client, "dag-sync").dispatch(request)
        stub.assert_no_pending_responses()


def test_file_lock_excludes_a_second_holder_until_released(tmp_path: Path) -> None:
    first = FileLock(tmp_path, "one", ttl_s=60, clock=time.time)
    second = FileLock(tmp_path, "two", ttl_s=60, clock=time.time)
    with first:
        with pytest.raises(SyncBusyError, match="another sync holds"):
            second.acquire()
        first.verify()
    second.acquire()
    second.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_stale_lock_is_taken_over_and_its_old_holder_cannot_publish(tmp_path: Path) -> None:
    now = [1000.0]
    dead = FileLock(tmp_path, "dead", ttl_s=10, clock=lambda: now[0])
    dead.acquire()
    # WHEN the holder's expiry passes
    now[0] += 11
    taker = FileLock(tmp_path, "taker", ttl_s=10, clock=lambda: now[0])
    taker.acquire()
    # THEN the new holder owns it and the old one is told before its irreversible step
    assert taker.took_over is not None
    assert taker.took_over.startswith("sync dead")
    taker.verify()
    with pytest.raises(LockLostError):
        dead.verify()
    dead.release()  # releasing a lock one no longer owns leaves the new owner's lock alone
    taker.verify()


class _KilledWhileCreating(BaseException):
    """Stands for a SIGKILL between writing the record and linking the lease name."""


def test_a_holder_killed_while_creating_the_lease_leaves_no_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a sync killed after writing its record, before the lease name exists
    def killed(_src: object, _dst: object) -> None:
        raise _KilledWhileCreating

    monkeypatch.setattr("airflow_control_plane.dagsync.lock.os.link", killed)
    with pytest.raises(_KilledWhileCreating):
        FileLock(tmp_path, "killed", ttl_s=60, clock=time.time).acquire()
    monkeypatch.undo()
    # THEN there is no lease, empty or not, for the next sync to wait on: it takes it at once
    assert not (tmp_path / LOCK_NAME).exists()
    nxt = FileLock(tmp_path, "next", ttl_s=60, clock=time.time)
    nxt.acquire()
    assert nxt.took_over is None
    assert json.loads((tmp_path / LOCK_NAME).read_text())["owner"] == "next"
    nxt.release()


def test_working_files_that_killed_holders_left_are_swept_after_a_ttl(tmp_path: Path) -> None:
    # GIVEN the working files a SIGKILL can leave (creating, renewing, taking over), one old, one fresh
    now = time.time()
    old = [tmp_path / f"{LOCK_NAME}{p}gone" for p in (".new-", ".renew-", ".stale-")]
    fresh = tmp_path / f"{LOCK_NAME}.new-racing"
    for path in [*old, fresh]:
        path.write_text("{}")
    for path in old:
        os.utime(path, (now - 120, now - 120))
    # WHEN a sync takes the lease
    lock = FileLock(tmp_path, "sweeper", ttl_s=60, clock=time.time)
    lock.acquire()
    # THEN the files older than a TTL are gone, a fresh one (a racing creator's) stays
    assert [p for p in old if p.exists()] == []
    assert fresh.exists()
    lock.release()


OTHER_MACHINE = Identity("another-host", "another-boot", 4242, "1")

HOLD_SCRIPT = """
import sys, time
from pathlib import Path
from airflow_control_plane.dagsync.lock import FileLock
lock = FileLock(Path(sys.argv[1]), "holder", ttl_s=3600, clock=time.time)
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_lease_whose_holder_was_killed_on_this_machine_is_taken_at_once(tmp_path: Path) -> None:
    # GIVEN a process holding an hour-long lease, killed with SIGKILL (nothing released it)
    proc = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"held\n"
    live = FileLock(tmp_path, "next", ttl_s=60, clock=time.time)
    with pytest.raises(SyncBusyError, match="pid"):
        live.acquire()  # while it runs, the lease holds
    proc.kill()
    proc.wait(timeout=10)
    # WHEN the next sync starts THEN it takes the lease on its first try, without waiting an hour
    started = time.monotonic()
    live.acquire()
    assert time.monotonic() - started < 1
    assert live.took_over is not None
    assert "holder" in live.took_over
    live.release()


def test_a_renewed_lease_is_kept_and_an_abandoned_one_expires_within_one_ttl(tmp_path: Path) -> None:
    # GIVEN a holder on another machine renewing a 0.6 s lease while it works
    holder = FileLock(tmp_path, "worker", ttl_s=0.6, clock=time.time, identity=OTHER_MACHINE)
    holder.acquire()
    holder.start_heartbeat()
    time.sleep(1.5)  # more than two TTLs
    # WHEN another sync waits for it THEN it sees the renewal and reports busy (the holder lives)
    waiter = FileLock(tmp_path, "waiter", ttl_s=0.6, clock=time.time, wait_s=5)
    with pytest.raises(SyncBusyError, match="renewed it while we waited"):
        waiter.acquire()
    holder.verify()
    # WHEN the holder stops renewing (frozen or killed elsewhere: nothing releases its file)
    holder._stop.set()
    assert holder._heartbeat is not None
    holder._heartbeat.join(5)
    # THEN a waiting sync gets the lease once it expires, within one TTL plus a poll
    started = time.monotonic()
    waiter.acquire()
    assert time.monotonic() - started < 0.6 + 1.1
    with pytest.raises(LockLostError):
        holder.verify()
    waiter.release()


def test_breaking_a_lease_by_hand(tmp_path: Path) -> None:
    # GIVEN a lease held by this very (running) process
    mine = FileLock(tmp_path, "mine", ttl_s=60, clock=time.time)
    mine.acquire()
    # THEN breaking it is refused unless forced
    refused = break_lease(tmp_path, now=time.time(), force=False)
    assert not refused.broken
    assert "running on this machine" in refused.reason
    assert break_lease(tmp_path, now=time.time(), force=True).broken
    assert not (tmp_path / LOCK_NAME).exists()
    # AND a lease from another machine is broken (the operator says it is dead)
    other = FileLock(tmp_path, "other", ttl_s=60, clock=time.time, identity=OTHER_MACHINE)
    other.acquire()
    result = break_lease(tmp_path, now=time.time(), force=False)
    assert result.broken
    assert "another-host" in result.reason
    assert not break_lease(tmp_path, now=time.time(), force=False).broken  # nothing left


def _contend(directory: str, owner: str, results: Any) -> None:
    """Try until the lock is held (bounded), hold it briefly, report the interval."""
    lock = FileLock(Path(directory), owner, ttl_s=60, clock=time.time)
    busy = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            lock.acquire()
        except SyncBusyError:
            busy += 1
            time.sleep(0.01)
            continue
        start = time.monotonic()
        time.sleep(0.05)
        end = time.monotonic()
        lock.release()
        results.put((owner, start, end, busy))
        return
    results.put((owner, -1.0, -1.0, busy))


def test_racing_processes_hold_the_lock_one_at_a_time(tmp_path: Path) -> None:
    # GIVEN eight processes racing for one lock, each retrying until it holds it once
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(str(tmp_path), f"p{i}", results)) for i in range(8)]
    for proc in procs:
        proc.start()
    outcomes = sorted((results.get(timeout=90) for _ in procs), key=lambda o: o[1])
    for proc in procs:
        proc.join(timeout=30)
    # THEN every one got it, and no two holding intervals overlap (CLOCK_MONOTONIC is system-wide)
    assert all(start >= 0 for _, start, _, _ in outcomes)
    for (_, _, end, _), (_, next_start, _, _) in itertools.pairwise(outcomes):
        assert end <= next_start
    assert not (tmp_path / LOCK_NAME).exists()


def test_file_delivery_store_claims_once_and_prunes(tmp_path: Path) -> None:
    store = FileDeliveryStore(tmp_path / ".webhook-deliveries")
    assert store.claim("abc-1", now=1.0)
    assert not store.claim("abc-1", now=2.0)
    store.unclaim("abc-1")
    assert store.claim("abc-1", now=3.0)
    assert store.prune(older_than=time.time() + 10) == 1
    assert store.claim("abc-1", now=4.0)
