"""``afctl``: the one command-line entry point for operators and the local runtime.

Subcommands live in ``airflow_control_plane.commands``: each module there exposes a
``COMMANDS`` list of click commands or groups. They are loaded lazily: ``COMMAND_TABLE``
names each command's module and its one-line help, so ``afctl --help`` imports none of
them (importing them all, Redis and Git clients included, took seconds). A unit test checks
the table against the modules' ``COMMANDS``, so a command missing from it fails the gate.
"""

from __future__ import annotations

import importlib
import sys

import click

from airflow_control_plane import __version__
from airflow_control_plane.errors import ControlPlaneError

# name -> (module under airflow_control_plane.commands, one-line help shown by --help)
COMMAND_TABLE: dict[str, tuple[str, str]] = {
    "up": ("local", "Bring up the local environment (migrate, admin user, services, health)."),
    "status": ("local", "Services and health, DAG release and last refused sync, autoscaler (--json)."),
    "down": ("local", "Hibernate: scheduler first, drain running tasks, then the rest."),
    "logs": ("everyday", "Print (-f: follow) the logs of one service or all."),
    "run": ("everyday", "Run a command with this environment's config: afctl run -- airflow ..."),
    "restart": ("everyday", "Restart one service's processes, or the whole environment."),
    "reset": ("everyday", "Wipe this environment's database, Redis db and state (asks first)."),
    "parse": ("everyday", "Load every DAG with real Airflow and report import errors."),
    "sync": ("sync", "Publish committed DAGs (a Git ref) atomically into the DAGs folder."),
    "dags": ("dags", "Work with DAG files (dags check)."),
    "scale": ("scale", "Evaluate the worker autoscaling policy and print each decision (--dry-run)."),
    "autoscale": ("autoscale", "Run the worker scaling policy in a loop (the local autoscaler)."),
    "simulate": ("scale", "Replay a task trace through the policy, KEDA and always-on workers."),
    "bench-up": ("local", "Time `airflow standalone` and `afctl up` to healthy, per step."),
    "bench-dagsync": ("bench_dagsync", "DAG sync figures against a naive clone and copy."),
    "bench-visible": ("bench_visible", "Time push -> DAG listed by the API: DAG sync vs GitDagBundle."),
    "bench-scaling": ("scale", "Autoscaler decision latency over a large task_instance table."),
    "bench-wakeup": ("bench_wakeup", "Time a task queued with zero workers until a worker runs it."),
}

HELP = """Operate a self-hosted Apache Airflow environment on AWS ECS Fargate, or the same
environment locally with real processes and no AWS account.

\b
Typical use:
  afctl up        bring up the local environment (migrate, admin user, services, health)
  afctl status    each service's desired and running count, health, DAG release
  afctl logs -f scheduler          follow one service's log
  afctl run -- airflow dags list   the Airflow CLI against this environment
  afctl down      hibernate: stop the scheduler first, drain, then the rest
  afctl parse     load every DAG with real Airflow and report import errors

Every command prints why it did what it did; errors name what to fix.
"""


class _Cli(click.Group):
    """A group that turns control-plane errors into one clear line and exit code 2."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ControlPlaneError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)


def _all_command_modules() -> list[str]:
    import pkgutil

    from airflow_control_plane import commands

    return sorted(info.name for info in pkgutil.iter_modules(commands.__path__))


class _LazyCli(_Cli):
    """Imports a command's module only when that command runs (or its own --help is asked)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMAND_TABLE, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        entry = COMMAND_TABLE.get(cmd_name)
        modules = [entry[0]] if entry else _all_command_modules()  # not in the table: look everywhere
        for name in modules:
            module = importlib.import_module(f"airflow_control_plane.commands.{name}")
            found: list[click.Command] = getattr(module, "COMMANDS", [])
            for command in found:
                if command.name == cmd_name:
                    self.add_command(command)
                    return command
        return None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMAND_TABLE[name][1]) for name in COMMAND_TABLE]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyCli, help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="afctl")
def cli() -> None:
    """Root command group."""


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="afctl")
