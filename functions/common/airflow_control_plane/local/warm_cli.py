"""A pre-imported Airflow CLI: runs each one-off command in a fork of one warm process.

Every ``airflow`` command pays for importing Airflow first (seconds of CPU). ``afctl up``
starts this process once; it imports Airflow's CLI and the FAB user commands, then runs
each request in a forked child, so ``db migrate`` and ``users create`` stay two separate
commands, each with its own exit code, but the import is paid once.

Protocol (one JSON line each way): request ``{"argv": [...], "stdin": "...", "log": path}``
runs ``airflow <argv>`` with that text as standard input and its output appended to
``log``; the answer is ``{"exit_code": N}``. An empty line (or end of input) exits.

Run with the runtime's interpreter: ``python -m airflow_control_plane.local.warm_cli``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from typing import Any


def _run_child(request: dict[str, Any], main: Any) -> int:
    fd = os.open(str(request["log"]), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    sys.stdin = io.StringIO(str(request.get("stdin", "")))
    sys.argv = ["airflow", *[str(a) for a in request["argv"]]]
    code = 0
    try:
        main()
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            code = 1
        else:
            code = int(exc.code or 0)
    except BaseException as exc:  # the child must always exit and report
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def serve() -> int:
    # Answers go to the original stdout; everything printed here (imports, warnings) goes
    # to stderr, the log, so it can never be mistaken for an answer.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    import airflow.__main__ as airflow_main
    from airflow.cli import cli_parser

    with contextlib.suppress(ImportError):
        import airflow.providers.fab.auth_manager.cli_commands.user_command
        import airflow.providers.fab.www.app  # noqa: F401
    cli_parser.get_parser()
    for line in sys.stdin:
        if not line.strip():
            break
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os._exit(_run_child(request, airflow_main.main))
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"exit_code": os.waitstatus_to_exitcode(status)}) + "\n")
        answers.flush()
    return 0


if __name__ == "__main__":
    sys.exit(serve())
