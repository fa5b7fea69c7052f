"""The afctl entry point: readable help, version, and one clear line per control-plane error."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from airflow_control_plane import __version__
from airflow_control_plane.cli import _Cli, cli
from airflow_control_plane.errors import InvalidInputError

pytestmark = pytest.mark.unit


def test_help_describes_the_tool_and_lists_registered_commands() -> None:
    # GIVEN the afctl group with every module of airflow_control_plane.commands registered
    # WHEN a newcomer asks for help
    result = CliRunner().invoke(cli, ["--help"])
    # THEN it explains what the tool is for and lists each registered subcommand
    assert result.exit_code == 0
    assert "ECS Fargate" in result.output
    for name in cli.commands:
        assert name in result.output


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
