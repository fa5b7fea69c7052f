"""``afctl``: the one command-line entry point for operators and the local runtime.

Subcommands live in ``airflow_control_plane.commands``: each module there exposes a
``COMMANDS`` list of click commands or groups, and this module registers them all, so
adding a command never means editing this file. Registration is lazy: ``afctl sync`` imports
only ``commands/sync.py`` (a module named after its command is tried first), so a command
does not pay for the imports of every other one; help and unknown names load them all.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import click

from airflow_control_plane import __version__, commands
from airflow_control_plane.errors import ControlPlaneError

HELP = """Operate a self-hosted Apache Airflow environment on AWS ECS Fargate, or the same
environment locally with real processes and no AWS account.

\b
Typical use:
  afctl up        bring up the local environment (migrate, admin user, services, health)
  afctl status    each service's desired and running count, and health
  afctl down      hibernate: stop the scheduler first, drain, then the rest
  afctl dags check dags/   load every DAG with real Airflow and report import errors

Every command prints why it did what it did; errors name what to fix.
"""


class _Cli(click.Group):
    """A group that turns control-plane errors into one clear line and exit code 2."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            _register_module(self, cmd_name.replace("-", "_"))
        if cmd_name not in self.commands:
            _register_all(self)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        _register_all(self)
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ControlPlaneError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)


@click.group(cls=_Cli, help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="afctl")
def cli() -> None:
    """Root command group."""


def _register_module(group: click.Group, name: str) -> None:
    if name not in {m.name for m in pkgutil.iter_modules(commands.__path__)}:
        return
    module = importlib.import_module(f"{commands.__name__}.{name}")
    for command in getattr(module, "COMMANDS", []):
        group.add_command(command)


def _register_all(group: click.Group) -> None:
    for module_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        _register_module(group, module_info.name)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="afctl")
