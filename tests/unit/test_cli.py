"""The afctl entry point: readable help, version, and one clear line per control-plane error."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from airflow_control_plane import __version__, commands
from airflow_control_plane.cli import COMMAND_TABLE, _Cli, cli
from airflow_control_plane.errors import InvalidInputError

pytestmark = pytest.mark.unit


def _modules_commands() -> dict[str, str]:
    """Every command the modules of airflow_control_plane.commands define -> its module."""
    found: dict[str, str] = {}
    for info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        for command in getattr(module, "COMMANDS", []):
            found[str(command.name)] = info.name
    return found


def test_the_lazy_command_table_names_every_command_and_its_module() -> None:
    # GIVEN the commands the modules define / WHEN compared with the table --help reads
    defined = _modules_commands()
    # THEN each table entry names a command of its module
    for name, (module, _help) in COMMAND_TABLE.items():
        assert defined.get(name) == module, name
    # AND a command missing from the table (listed by --help only once added) still runs
    for name in set(defined) - set(COMMAND_TABLE):
        assert CliRunner().invoke(cli, [name, "--help"]).exit_code == 0, name
    assert set(COMMAND_TABLE) <= set(defined)


def test_help_describes_the_tool_and_lists_every_command() -> None:
    # GIVEN the afctl group / WHEN a newcomer asks for help
    result = CliRunner().invoke(cli, ["--help"])
    # THEN it explains what the tool is for and lists each subcommand
    assert result.exit_code == 0
    assert "ECS Fargate" in result.output
    for name in COMMAND_TABLE:
        assert name in result.output
    # AND each command resolves and has its own help
    for name in COMMAND_TABLE:
        sub = CliRunner().invoke(cli, [name, "--help"])
        assert sub.exit_code == 0, (name, sub.output)


def test_help_imports_no_command_module() -> None:
    # GIVEN a fresh interpreter / WHEN `afctl --help` runs / THEN no command module was imported
    code = (
        "import sys\n"
        "from airflow_control_plane.cli import main\n"
        "sys.argv = ['afctl', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "loaded = [m for m in sys.modules if m.startswith('airflow_control_plane.commands.')]\n"
        "print('LOADED', loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "LOADED []" in done.stdout, done.stdout


def test_version_option_prints_the_package_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_control_plane_errors_become_one_line_and_exit_code_2() -> None:
    # GIVEN a command that rejects its input
    @click.group(cls=_Cli)
    def group() -> None:
        """Test group."""

    @group.command()
    def explode() -> None:
        raise InvalidInputError("ref 'mian' does not exist in the repository")

    # WHEN it runs
    result = CliRunner().invoke(group, ["explode"])
    # THEN the operator reads the reason, not a traceback, and the exit code says "error"
    assert result.exit_code == 2
    assert "error: ref 'mian' does not exist" in result.output
    assert "Traceback" not in result.output


def test_up_help_lists_its_options_and_variables() -> None:
    result = CliRunner().invoke(cli, ["up", "--help"])
    assert result.exit_code == 0
    for name in (
        "--join",
        "AFCTL_DATABASE_URL",
        "AFCTL_REDIS_URL",
        "AFCTL_JOIN",
        "AFCTL_API_PORT",
        "AIRFLOW__",
    ):
        assert name in result.output, name


def test_scale_help_shows_the_queue_map_shape_and_no_apply() -> None:
    result = CliRunner().invoke(cli, ["scale", "--help"])
    assert result.exit_code == 0
    assert '"queue": "default", "service": "worker-default"' in " ".join(result.output.split())
    assert "--apply" not in result.output
    assert "--dry-run" not in result.output  # always a dry run: not an option to learn
