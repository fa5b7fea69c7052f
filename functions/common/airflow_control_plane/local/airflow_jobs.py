"""One-off Airflow jobs (``airflow db migrate``, ``airflow users create``) as processes.

Like ECS RunTask for a one-off container: run, wait (bounded), check the exit code. The
output goes to a log file under the state folder; secrets are passed on stdin, never on the
command line (where any user could read them with ``ps``).
"""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from airflow_control_plane.errors import TransientError
from airflow_control_plane.local import proc


@dataclass(frozen=True)
class JobResult:
    exit_code: int
    output: str
    log_path: Path


def run_job(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    timeout_s: float,
    stdin_text: str | None = None,
    cwd: Path | None = None,
) -> JobResult:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # no controlling terminal: getpass reads stdin; own group to kill
    )
    try:
        output, _ = process.communicate(stdin_text, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.signal_group(process.pid, signal.SIGKILL)
        process.communicate()
        raise TransientError(f"`{' '.join(argv[1:3])}` did not finish within {timeout_s:.0f} s") from None
    except BaseException:
        proc.signal_group(process.pid, signal.SIGKILL)
        process.wait()
        raise
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"--- {' '.join(argv[1:3])} exited {process.returncode}\n{output}\n")
    return JobResult(process.returncode, output, log_path)


class WarmCli:
    """Client of :mod:`warm_cli`: one process imports Airflow once, each command runs in a fork."""

    def __init__(
        self, python: Path, *, env: Mapping[str, str], log_path: Path, cwd: Path | None = None
    ) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [str(python), "-m", "airflow_control_plane.local.warm_cli"],
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )

    def run(
        self, argv: Sequence[str], *, log_path: Path, timeout_s: float, stdin_text: str = ""
    ) -> JobResult:
        """Run ``airflow <argv>`` (argv without the executable); bounded; returns the exit code."""
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None
        assert stdout is not None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        start = log_path.stat().st_size if log_path.exists() else 0
        request = {"argv": list(argv), "stdin": stdin_text, "log": str(log_path)}
        what = f"`airflow {' '.join(argv[:2])}`"
        try:
            stdin.write((json.dumps(request) + "\n").encode())
            stdin.flush()
        except BrokenPipeError:
            raise TransientError(f"{what}: the pre-imported Airflow CLI exited; see {log_path}") from None
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            if not selector.select(timeout=timeout_s):
                self.close()
                raise TransientError(f"{what} did not finish within {timeout_s:.0f} s")
        line = stdout.readline()
        if not line:
            raise TransientError(f"{what}: the pre-imported Airflow CLI exited; see {log_path}")
        try:
            code = int(json.loads(line)["exit_code"])
        except (ValueError, KeyError, TypeError) as exc:
            self.close()
            raise TransientError(
                f"{what}: malformed answer from the pre-imported CLI: {line[:200]!r}"
            ) from exc
        with log_path.open("rb") as log:
            log.seek(start)
            output = log.read().decode("utf-8", errors="replace")
        return JobResult(code, output, log_path)

    def close(self) -> None:
        """Stop the process (safe to call more than once)."""
        if self._process.poll() is None:
            proc.signal_group(self._process.pid, signal.SIGKILL)
        self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                stream.close()
