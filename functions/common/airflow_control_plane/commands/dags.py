"""``afctl dags``: check that every DAG file loads with real Airflow before it ships."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from airflow_control_plane.dag_check import DEFAULT_TIMEOUT_S, DagCheckResult, check_dag_folder


@click.group()
def dags() -> None:
    """Work with DAG files."""


@dags.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option(
    "--python",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Interpreter with Airflow installed (default: the one running afctl).",
)
@click.option(
    "--strict", is_flag=True, help="Also exit 1 when a DAG breaks a house rule (owner, retries, ...)."
)
@click.option(
    "--timeout", "timeout_s", type=click.IntRange(min=1), default=DEFAULT_TIMEOUT_S, show_default=True
)
def check(path: Path, as_json: bool, python: Path | None, strict: bool, timeout_s: int) -> None:
    """Load every DAG file under PATH with Airflow's DagBag and report DAG ids and import errors.

    Exit 0 when every file imports, 1 when any file fails (or, with --strict, when a DAG
    breaks a house rule), 2 when the check itself cannot run.
    """
    result = check_dag_folder(path, python=python, timeout_s=timeout_s)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _print_human(result)
    if not result.ok or (strict and result.has_findings):
        sys.exit(1)


def _print_human(result: DagCheckResult) -> None:
    click.echo(f"{len(result.dags)} DAG(s) in {result.folder}")
    for dag in result.dags:
        tags = ", ".join(dag.tags) or "-"
        click.echo(
            f"  {dag.dag_id}  ({dag.file}; owner {dag.owner}; retries >= {dag.min_retries}; "
            f"{dag.task_count} tasks; tags {tags})"
        )
        for finding in dag.findings:
            click.secho(f"    rule: {finding}", fg="yellow")
    for error in result.import_errors:
        where = f"{error.file}:{error.line}" if error.line is not None else error.file
        click.secho(f"  import error: {where}: {error.message}", fg="red")
    if result.ok:
        click.secho("all DAG files import cleanly", fg="green")
    else:
        click.secho(f"{len(result.import_errors)} file(s) failed to import", fg="red")


COMMANDS: list[click.Command] = [dags]
