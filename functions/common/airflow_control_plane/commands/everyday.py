"""The everyday local commands: ``afctl logs``, ``run``, ``restart``, ``reset``, ``parse``.

Each works on the local environment of this checkout (or ``AFCTL_STATE_DIR``). Heavy modules
are imported inside the commands, so ``afctl --help`` stays fast.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

# --- logs ---------------------------------------------------------------------------------------


def log_files(logs_dir: Path, service: str | None) -> list[Path]:
    """The log files of SERVICE (each process: <service>-<index>.log), or every log."""
    if not logs_dir.is_dir():
        return []
    if service is None:
        return sorted(p for p in logs_dir.glob("*.log") if p.is_file())
    return sorted(logs_dir.glob(f"{service}-*.log")) or sorted(logs_dir.glob(f"{service}.log"))


def _tail(path: Path, lines: int) -> tuple[list[str], int]:
    data = path.read_bytes()
    text = data.decode(errors="replace").splitlines()
    return (text[-lines:] if lines else []), len(data)


@click.command("logs")
@click.argument("service", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C to stop).")
@click.option(
    "-n", "--lines", default=50, show_default=True, type=click.IntRange(min=0), help="Lines per file."
)
def logs(service: str | None, follow: bool, lines: int) -> None:
    """Print the logs of SERVICE (api-server, scheduler, dag-processor, triggerer, worker,
    autoscaler, supervisor, migrate, ...) or of every service, each line prefixed by its file."""
    from airflow_control_plane.local.settings import LocalSettings

    settings = LocalSettings.from_env()
    files = log_files(settings.paths.logs, service)
    if not files:
        known = sorted(
            {p.name.rsplit("-", 1)[0].removesuffix(".log") for p in log_files(settings.paths.logs, None)}
        )
        raise click.UsageError(
            f"no log for {service!r} in {settings.paths.logs}"
            + (f"; known: {', '.join(known)}" if known else " (run `afctl up` first)")
        )
    offsets: dict[Path, int] = {}
    for path in files:
        text, offsets[path] = _tail(path, lines)
        for line in text:
            click.echo(f"{path.stem} | {line}")
    if follow:
        _follow(settings.paths.logs, service, offsets)


def _follow(logs_dir: Path, service: str | None, offsets: dict[Path, int]) -> None:
    """Print what is appended to the files (new processes' files too) until Ctrl-C."""
    try:
        while True:
            time.sleep(0.5)
            for path in log_files(logs_dir, service):
                size = path.stat().st_size
                start = offsets.get(path, 0) if size >= offsets.get(path, 0) else 0  # truncated: again
                if size == start:
                    continue
                with path.open("rb") as handle:
                    handle.seek(start)
                    chunk = handle.read(size - start)
                offsets[path] = size
                for line in chunk.decode(errors="replace").splitlines():
                    click.echo(f"{path.stem} | {line}")
    except KeyboardInterrupt:
        return


# --- run ----------------------------------------------------------------------------------------


@click.command("run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, required=True)
def run(argv: tuple[str, ...]) -> None:
    """Run a command with this environment's Airflow configuration, e.g.
    `afctl run -- airflow dags list` or `afctl run -- airflow connections add ...`.

    `airflow` is the runtime environment's; the exit code is the command's.
    """
    import subprocess

    from airflow_control_plane.errors import ConfigError
    from airflow_control_plane.local.files import read_json
    from airflow_control_plane.local.settings import LocalSettings

    settings = LocalSettings.from_env()
    spec = read_json(settings.paths.supervisor_spec)
    if not isinstance(spec, dict) or not isinstance(spec.get("env"), dict):
        raise ConfigError(f"no local environment at {settings.paths.root}: run `afctl up` first")
    command = list(argv)
    if command[0] == "airflow":
        command[0] = settings.airflow_bin
    try:
        done = subprocess.run(command, env=dict(spec["env"]), check=False)
    except FileNotFoundError as exc:
        raise ConfigError(f"cannot run {command[0]!r}: {exc}") from None
    sys.exit(done.returncode)


# --- restart ------------------------------------------------------------------------------------


@click.command("restart")
@click.argument("service", required=False)
@click.option(
    "--timeout", "timeout_s", default=180.0, show_default=True, help="Seconds to wait for each step."
)
def restart(service: str | None, timeout_s: float) -> None:
    """Restart SERVICE's processes (stop them, start as many again, wait until steady).

    Without SERVICE: `afctl down` then `afctl up` (running tasks are drained first).
    """
    from airflow_control_plane.errors import ConfigError
    from airflow_control_plane.local.ecs import LocalEcs
    from airflow_control_plane.local.settings import LocalSettings

    settings = LocalSettings.from_env()
    if service is None:
        from airflow_control_plane.local.bringup import BringUp
        from airflow_control_plane.local.hibernate import Hibernate

        Hibernate(settings, click.echo, force=False, drain_timeout_s=None).run()
        BringUp(settings, click.echo).run()
        return
    ecs = LocalEcs(settings.paths)
    if not ecs.is_running():
        raise ConfigError("the local environment is not running: `afctl up` starts it")
    states = {s.name: s for s in ecs.describe()}
    if service not in states:
        raise ConfigError(f"no service {service!r}; services: {', '.join(sorted(states))}")
    desired = states[service].desired
    if desired == 0:
        click.echo(f"{service}: desired count 0, nothing to restart")
        return
    click.echo(f"{service}: stopping {states[service].running} process(es)")
    ecs.set_desired_count(service, 0)
    _wait(ecs, service, lambda s: s.running == 0, timeout_s, "to stop")
    click.echo(f"{service}: starting {desired} process(es)")
    ecs.set_desired_count(service, desired)
    _wait(ecs, service, lambda s: s.steady and s.running == desired, timeout_s, "to run")
    pids = ",".join(str(p) for p in {s.name: s for s in ecs.describe()}[service].pids)
    click.echo(f"{service}: restarted (pids {pids})")


def _wait(ecs: object, service: str, done: object, timeout_s: float, what: str) -> None:
    from airflow_control_plane.errors import TransientError
    from airflow_control_plane.poll import PollTimedOut, poll_until

    last_note = time.monotonic()

    def finished() -> bool:
        nonlocal last_note
        state = {s.name: s for s in ecs.describe()}[service]  # type: ignore[attr-defined]
        if done(state):  # type: ignore[operator]
            return True
        if time.monotonic() - last_note > 10:
            click.echo(f"  waiting for {service} {what}: running {state.running}, desired {state.desired}")
            last_note = time.monotonic()
        return False

    try:
        poll_until(finished, timeout_s=timeout_s, interval_s=0.5, what=f"{service} {what}")
    except PollTimedOut:
        raise TransientError(
            f"{service} did not {what.removeprefix('to ')} within {timeout_s:.0f} s"
        ) from None


# --- reset --------------------------------------------------------------------------------------


@click.command("reset")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def reset(yes: bool) -> None:
    """Wipe this environment: its database (if leased to it), its Redis db, its state folder.

    The environment must be stopped (`afctl down`). A database or Redis db another environment
    leases, or one this environment only joined, is left alone.
    """
    from airflow_control_plane.errors import ConfigError
    from airflow_control_plane.local.ecs import LocalEcs
    from airflow_control_plane.local.reset import apply_reset, plan_reset
    from airflow_control_plane.local.settings import LocalSettings

    settings = LocalSettings.from_env()
    if LocalEcs(settings.paths).is_running():
        raise ConfigError("the local environment is running: `afctl down` first, then `afctl reset`")
    plan = plan_reset(settings.paths)
    for line in plan.describe():
        click.echo(line)
    if not plan.anything:
        return
    if not yes and not click.confirm("Wipe all of this?", default=False):
        click.echo("nothing was changed")
        sys.exit(1)
    for line in apply_reset(plan):
        click.echo(line)


# --- parse --------------------------------------------------------------------------------------


@click.command("parse")
@click.argument("folder", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--strict", is_flag=True, help="Also fail when a DAG breaks a house rule.")
def parse(folder: Path | None, strict: bool) -> None:
    """Load every DAG of FOLDER (default: this checkout's dags/) with real Airflow and report
    import errors with file and line; exit 1 if any file fails (`afctl dags check`)."""
    from airflow_control_plane.commands.dags import check
    from airflow_control_plane.dag_check import DEFAULT_TIMEOUT_S
    from airflow_control_plane.local.settings import LocalSettings

    target = folder or LocalSettings.from_env().dags_folder
    ctx = click.get_current_context()
    ctx.invoke(check, path=target, as_json=False, python=None, strict=strict, timeout_s=DEFAULT_TIMEOUT_S)


COMMANDS: list[click.Command] = [logs, run, restart, reset, parse]
