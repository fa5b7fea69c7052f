"""The local ECS: a background daemon that runs each service's processes at a desired count.

It restarts crashed processes with backoff, stops extras gracefully (SIGTERM to the process
group, SIGKILL after the grace period, without blocking the loop), keeps desired counts in a
file so a restarted supervisor resumes them, and answers the control protocol on a unix
socket. Shutdown stops everything and exits, leaving no process behind.

Run as ``python -m airflow_control_plane.local.supervisor --state-dir DIR``; started by
:func:`airflow_control_plane.local.ecs.ensure_supervisor`.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from airflow_control_plane.local import proc
from airflow_control_plane.local.airflow_env import STATE_MARKER_ENV, ServiceSpec
from airflow_control_plane.local.files import read_json, write_json
from airflow_control_plane.local.paths import StatePaths
from airflow_control_plane.local.ports import free_port
from airflow_control_plane.local.process_table import ProcessView, plan_reconcile
from airflow_control_plane.local.protocol import ServiceState
from airflow_control_plane.local.restart_policy import RestartPolicy, SlotHistory, record_exit
from airflow_control_plane.poll import poll_done

TICK_S = 0.5
# A process must be up this long before its service counts as steady. ECS counts a task as
# running once it started; crash loops are caught by the health gate (restart count).
MIN_UPTIME_S = 0.0


@dataclass
class _Proc:
    service: str
    index: int
    popen: subprocess.Popen[bytes]
    start_ticks: int
    started_at: float
    log: IO[bytes]
    stopping: bool = False
    kill_at: float | None = None
    killed: bool = False
    # Scale-in protection, held from the start like an ECS worker's; released by the scaler's drain.
    protected: bool = True
    # Descendants seen while stopping (task processes leave the group; see proc.descendants).
    tree: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass
class _Spec:
    services: dict[str, ServiceSpec]
    env: dict[str, str]
    stop_grace_s: float
    mtime: float = 0.0


def load_spec(path: Path) -> _Spec:
    data = read_json(path)
    if not isinstance(data, dict):
        raise SystemExit(f"supervisor: service spec {path} is missing or malformed")
    services = {
        name: ServiceSpec(
            name,
            tuple(s["argv"]),
            s.get("port_env"),
            s.get("max_count"),
            bool(s.get("term_group", True)),
            tuple((str(k), str(v)) for k, v in s.get("env", [])),
        )
        for name, s in data["services"].items()
    }
    return _Spec(services, dict(data["env"]), float(data["stop_grace_s"]), path.stat().st_mtime)


def dump_spec(path: Path, services: Mapping[str, ServiceSpec], env: Mapping[str, str], grace: float) -> None:
    """Write the spec the supervisor runs (0600: the environment holds the shared secrets)."""
    data = {
        "services": {
            n: {
                "argv": list(s.argv),
                "port_env": s.port_env,
                "max_count": s.max_count,
                "term_group": s.term_group,
                "env": [list(pair) for pair in s.env],
            }
            for n, s in services.items()
        },
        "env": dict(env),
        "stop_grace_s": grace,
    }
    write_json(path, data)


@dataclass
class Supervisor:
    paths: StatePaths
    spec: _Spec
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    desired: dict[str, int] = field(default_factory=dict)
    procs: list[_Proc] = field(default_factory=list)
    histories: dict[tuple[str, int], SlotHistory] = field(default_factory=dict)
    waiting: tuple[str, ...] = ()
    shutting_down: bool = False

    # --- state files -------------------------------------------------------------------
    def load_desired(self) -> None:
        data = read_json(self.paths.desired_counts) or {}
        self.desired = {k: int(v) for k, v in data.items() if k in self.spec.services}

    def _save_desired(self) -> None:
        write_json(self.paths.desired_counts, self.desired)

    def _save_table(self) -> None:
        rows = [{"pid": p.pid, "start_ticks": p.start_ticks, "service": p.service} for p in self.procs]
        write_json(self.paths.process_table, rows)

    def kill_previous_strays(self) -> None:
        """Stop service processes a crashed earlier supervisor left behind (pid + start time)."""
        rows = read_json(self.paths.process_table) or []
        for row in rows:
            pid, ticks = int(row["pid"]), int(row["start_ticks"])
            if proc.is_alive(pid, ticks):
                log(f"stopping stray {row['service']} process group {pid} from a previous supervisor")
                _stop_group_blocking(pid, self.spec.stop_grace_s)
        write_json(self.paths.process_table, [])

    # --- processes ---------------------------------------------------------------------
    def _start(self, service: str, index: int, now: float) -> None:
        spec = self.spec.services[service]
        env = {**self.spec.env, **dict(spec.env), STATE_MARKER_ENV: str(self.paths.root)}
        if spec.port_env:
            env[spec.port_env] = str(free_port())
        log_file = (self.paths.logs / f"{service}-{index}.log").open("ab")
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log_file.write(
            f"--- {stamp} starting {service}[{index}]: {' '.join(spec.argv_for(index))}\n".encode()
        )
        log_file.flush()
        popen = subprocess.Popen(
            spec.argv_for(index),
            env=env,
            cwd=self.paths.root,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop the whole tree at once
        )
        stat = proc.read_stat(popen.pid)
        self.procs.append(_Proc(service, index, popen, stat.start_ticks if stat else 0, now, log_file))
        history = self.histories.get((service, index))
        if history is not None and history.consecutive_failures:
            self.histories[(service, index)] = SlotHistory(
                history.consecutive_failures,
                history.last_exit_at,
                history.last_exit_code,
                history.restarts + 1,
            )
        log(f"started {service}[{index}] pid {popen.pid}")

    def _begin_stop(self, p: _Proc, now: float, reason: str) -> None:
        p.stopping = True
        p.kill_at = now + self.spec.stop_grace_s
        p.tree.update(proc.descendants(p.pid))
        # SIGTERM to the group (or the main process only, for Celery's warm shutdown); task
        # processes in their own groups are left to finish; SIGKILL after the grace hits all.
        spec = self.spec.services.get(p.service)
        if spec is None or spec.term_group:
            proc.signal_group(p.pid, signal.SIGTERM)
        else:
            proc.signal_pid(p.pid, signal.SIGTERM)
        log(f"stopping {p.service}[{p.index}] pid {p.pid}: {reason}")

    def _reap(self, now: float) -> None:
        for p in list(self.procs):
            code = p.popen.poll()
            if code is not None and not p.stopping:
                # Crashed (nobody asked it to stop): record for backoff, clean up its group.
                hist = self.histories.get((p.service, p.index), SlotHistory())
                self.histories[(p.service, p.index)] = record_exit(
                    hist, started_at=p.started_at, exited_at=now, exit_code=code, policy=self.policy
                )
                self._begin_stop(p, now, f"exited unexpectedly with code {code}")
            if p.stopping:
                self._advance_stop(p, code, now)

    def _advance_stop(self, p: _Proc, code: int | None, now: float) -> None:
        """Past the grace period, SIGKILL the group; forget the process once its group is empty."""
        overdue = p.kill_at is not None and now >= p.kill_at
        if code is None:
            p.tree.update(proc.descendants(p.pid))
        p.tree = {pid for pid in p.tree if proc.is_alive(pid)}
        members = proc.group_members(p.pid)
        if overdue and (members or p.tree):
            if not p.killed:
                grace = self.spec.stop_grace_s
                log(f"{p.service}[{p.index}] pid {p.pid} still running {grace:.0f} s after SIGTERM: SIGKILL")
                p.killed = True
            proc.signal_group(p.pid, signal.SIGKILL)
            for pid in p.tree:
                proc.signal_pid(pid, signal.SIGKILL)
        if code is not None and not members and not p.tree:
            p.log.close()
            self.procs.remove(p)

    def reconcile(self, now: float) -> None:
        self._maybe_reload_spec()
        self._reap(now)
        proc.reap_orphans({p.pid for p in self.procs})
        desired = {} if self.shutting_down else self.desired
        views = [
            ProcessView(p.service, p.index, p.pid, p.started_at, p.stopping, p.protected) for p in self.procs
        ]
        plan = plan_reconcile(desired, views, self.histories, now, self.policy)
        for stop in plan.stops:
            target = next(p for p in self.procs if p.pid == stop.pid)
            self._begin_stop(target, now, stop.reason)
        for start in plan.starts:
            try:
                self._start(start.service, start.index, now)
            except OSError as exc:
                hist = self.histories.get((start.service, start.index), SlotHistory())
                self.histories[(start.service, start.index)] = record_exit(
                    hist, started_at=now, exited_at=now, exit_code=None, policy=self.policy
                )
                log(f"cannot start {start.service}[{start.index}]: {exc}")
        self.waiting = plan.waiting
        self._save_table()

    def _maybe_reload_spec(self) -> None:
        try:
            mtime = self.paths.supervisor_spec.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime != self.spec.mtime:
            self.spec = load_spec(self.paths.supervisor_spec)
            log("service spec changed: new processes use it")

    # --- control -----------------------------------------------------------------------
    def describe(self, now: float) -> list[ServiceState]:
        states = []
        for name in self.spec.services:
            mine = [p for p in self.procs if p.service == name]
            active = [p for p in mine if not p.stopping and p.popen.poll() is None]
            stopping = [p for p in mine if p.stopping]
            want = 0 if self.shutting_down else self.desired.get(name, 0)
            settled = all(now - p.started_at >= MIN_UPTIME_S for p in active)
            histories = [h for (s, _), h in self.histories.items() if s == name]
            last = max(histories, key=lambda h: h.last_exit_at or 0.0, default=None)
            states.append(
                ServiceState(
                    name=name,
                    desired=want,
                    running=len(active),
                    stopping=len(stopping),
                    pids=tuple(p.pid for p in active),
                    restarts=sum(h.restarts for h in histories),
                    last_exit_code=None if last is None else last.last_exit_code,
                    steady=len(active) == want and not stopping and settled,
                    waiting=tuple(w for w in self.waiting if w.startswith(f"{name}[")),
                    unprotected=tuple(sorted(p.index for p in active if not p.protected)),
                )
            )
        return states

    def handle(self, request: Mapping[str, Any], now: float) -> dict[str, Any]:
        op = request.get("op")
        if op == "describe":
            return {"ok": True, "services": [s.to_json() for s in self.describe(now)]}
        if op == "set_desired":
            return self._set_desired(request.get("service"), request.get("count"), now)
        if op == "release_protection":
            return self._release(request.get("service"), request.get("indices"))
        if op == "shutdown":
            self.shutting_down = True
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def _release(self, service: object, indices: object) -> dict[str, Any]:
        """ECS UpdateTaskProtection(false): the next scale-in stops these slots first."""
        if not isinstance(indices, list) or not all(isinstance(i, int) for i in indices):
            return {"ok": False, "error": f"indices must be a list of integers, got {indices!r}"}
        released = []
        for p in self.procs:
            if p.service == service and p.index in indices and not p.stopping:
                p.protected = False
                released.append(p.index)
        return {"ok": True, "released": sorted(released)}

    def _set_desired(self, service: object, count: object, now: float) -> dict[str, Any]:
        if not isinstance(service, str) or service not in self.spec.services:
            return {"ok": False, "error": f"unknown service {service!r}; known: {sorted(self.spec.services)}"}
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            return {"ok": False, "error": f"desired count must be a non-negative integer, got {count!r}"}
        limit = self.spec.services[service].max_count
        if limit is not None and count > limit:
            return {
                "ok": False,
                "error": f"{service} runs at most {limit} process(es) locally, asked {count}",
            }
        if self.shutting_down:
            return {"ok": False, "error": "the supervisor is shutting down"}
        self.desired[service] = count
        self._save_desired()
        self.reconcile(now)
        return {"ok": True}


def _stop_group_blocking(pgid: int, grace: float) -> None:
    proc.signal_group(pgid, signal.SIGTERM)
    poll_done(lambda: not proc.group_members(pgid), timeout_s=grace, interval_s=0.2)
    if proc.group_members(pgid):
        proc.signal_group(pgid, signal.SIGKILL)


def log(message: str) -> None:
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    print(f"{stamp} supervisor: {message}", flush=True)


def _serve_one(conn: socket.socket, supervisor: Supervisor) -> None:
    conn.settimeout(5.0)
    with conn:
        buffer = b""
        while not buffer.endswith(b"\n") and len(buffer) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                break
            buffer += chunk
        try:
            request = json.loads(buffer or b"null")
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
            response = supervisor.handle(request, time.monotonic())
        except ValueError as exc:
            response = {"ok": False, "error": f"bad request: {exc}"}
        conn.sendall(json.dumps(response).encode() + b"\n")


def _listen(path: Path) -> socket.socket:
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o600)
    server.listen(16)
    server.setblocking(False)
    return server


def _stop_orphans(supervisor: Supervisor) -> None:
    """Stop processes re-parented to us (their service's process already gone)."""
    orphans = proc.direct_children({p.pid for p in supervisor.procs})
    if not orphans:
        return
    log(f"stopping {len(orphans)} orphaned process(es): {orphans}")
    for pid in orphans:
        proc.signal_pid(pid, signal.SIGTERM)

    def gone() -> bool:
        proc.reap_orphans(set())
        return not any(proc.is_alive(pid) for pid in orphans)

    poll_done(gone, timeout_s=min(10.0, supervisor.spec.stop_grace_s), interval_s=0.2)
    for pid in orphans:
        proc.signal_pid(pid, signal.SIGKILL)
    proc.reap_orphans(set())


def run(paths: StatePaths) -> int:
    proc.become_child_subreaper()
    supervisor = Supervisor(paths, load_spec(paths.supervisor_spec))
    supervisor.load_desired()
    supervisor.kill_previous_strays()
    stop_requested = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server = _listen(paths.supervisor_socket)
    write_json(paths.supervisor_pid, {"pid": os.getpid()})
    log(f"running with desired counts {supervisor.desired}")
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    try:
        while True:
            if stop_requested:
                supervisor.shutting_down = True
            supervisor.reconcile(time.monotonic())
            if supervisor.shutting_down and not supervisor.procs:
                _stop_orphans(supervisor)
                break
            for _key, _events in selector.select(timeout=TICK_S):
                try:
                    conn, _ = server.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(True)
                try:
                    _serve_one(conn, supervisor)
                except OSError as exc:
                    log(f"control connection failed: {exc}")
    finally:
        selector.close()
        server.close()
        paths.supervisor_socket.unlink(missing_ok=True)
        paths.supervisor_pid.unlink(missing_ok=True)
        write_json(paths.process_table, [])
    log("all services stopped; exiting")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="afctl local supervisor (the local ECS)")
    parser.add_argument("--state-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    return run(StatePaths(args.state_dir.resolve()))


if __name__ == "__main__":
    sys.exit(main())
