"""DAG integrity check: load every DAG file of a folder with real Airflow and report the result.

The loading runs in a child Python process (``python -m airflow_control_plane.dag_check``)
with a throw-away ``AIRFLOW_HOME`` and SQLite URL, so it needs no metadata database, writes
nothing into the repository or the caller's Airflow home, and can use another interpreter
than the caller's (the runtime ``.venv`` from the Airflow-less ``.venv-dev``). The child
imports Airflow lazily and writes a JSON report; everything after that is pure parsing here,
so this module imports without Airflow.

Parsing uses ``DagBag(safe_mode=False)``: every ``*.py`` file is imported, also files that
Airflow's safe-mode heuristic would skip, so a broken helper module cannot hide.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from airflow_control_plane.errors import ConfigError, ControlPlaneError, InvalidInputError

DEFAULT_TIMEOUT_S = 180
DEFAULT_OWNER = "airflow"  # Airflow's [operators] default_owner: means nobody set one
_EXIT_NO_AIRFLOW = 3
_FRAME = re.compile(r'File "(?P<path>[^"]+)", line (?P<line>\d+)')
_SYNTAX_LOCATION = re.compile(r"\((?P<name>[^(),]+), line (?P<line>\d+)\)\s*$")


@dataclass(frozen=True)
class DagImportProblem:
    """One file that failed to import: its path relative to the folder, the error, the line."""

    file: str
    message: str
    line: int | None
    detail: str


@dataclass(frozen=True)
class DagSummary:
    """What a reviewer checks on each DAG, as Airflow parsed it."""

    dag_id: str
    file: str
    owner: str
    tags: tuple[str, ...]
    min_retries: int
    task_count: int
    catchup: bool
    schedule: str | None
    has_doc_md: bool
    operators: tuple[str, ...]

    @property
    def findings(self) -> tuple[str, ...]:
        return review_dag(self)


@dataclass(frozen=True)
class DagCheckResult:
    folder: str
    dags: tuple[DagSummary, ...]
    import_errors: tuple[DagImportProblem, ...]

    @property
    def ok(self) -> bool:
        """True when every file imported (house-rule findings are reported separately)."""
        return not self.import_errors

    @property
    def dag_ids(self) -> tuple[str, ...]:
        return tuple(sorted(d.dag_id for d in self.dags))

    @property
    def has_findings(self) -> bool:
        return any(d.findings for d in self.dags)

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "ok": self.ok,
            "dag_ids": list(self.dag_ids),
            "dags": [
                {
                    **asdict(d),
                    "tags": list(d.tags),
                    "operators": list(d.operators),
                    "findings": list(d.findings),
                }
                for d in self.dags
            ],
            "import_errors": [asdict(e) for e in self.import_errors],
        }


def review_dag(dag: DagSummary) -> tuple[str, ...]:
    """The house rules for a DAG; an empty tuple means it passes."""
    findings = []
    if not dag.owner.strip() or dag.owner.strip() == DEFAULT_OWNER:
        findings.append("no owner set (default_args owner)")
    if dag.min_retries < 1:
        findings.append(f"a task has retries={dag.min_retries}; every task needs retries >= 1")
    if not dag.tags:
        findings.append("no tags")
    if dag.catchup:
        findings.append("catchup is on; samples and new DAGs use catchup=False")
    if not dag.has_doc_md:
        findings.append("no doc_md")
    return tuple(findings)


def parse_import_error(file: str, text: str) -> DagImportProblem:
    """Turn Airflow's import-error text (a traceback or a message) into file, message and line.

    The line is that of the innermost traceback frame in the failing file, or the
    ``(name.py, line N)`` location of a SyntaxError message; None when Airflow gives none.
    """
    lines = [line for line in text.strip().splitlines() if line.strip()]
    message = lines[-1].strip() if lines else "unknown import error"
    name = Path(file).name
    line: int | None = None
    for match in _FRAME.finditer(text):
        if Path(match["path"]).name == name:
            line = int(match["line"])
    if line is None and (syntax := _SYNTAX_LOCATION.search(message)) and syntax["name"].strip() == name:
        line = int(syntax["line"])
    return DagImportProblem(file=file, message=message, line=line, detail=text.strip())


def result_from_report(folder: str, report: object) -> DagCheckResult:
    """Build the typed result from the child's JSON report; a malformed report is an error."""
    try:
        if not isinstance(report, Mapping):
            raise TypeError(f"expected a JSON object, got {type(report).__name__}")
        raw_dags, raw_errors = report["dags"], report["import_errors"]
        if not isinstance(raw_dags, list) or not isinstance(raw_errors, Mapping):
            raise TypeError("'dags' must be a list and 'import_errors' an object")
        dags = tuple(sorted((_summary_from_dict(d) for d in raw_dags), key=lambda d: d.dag_id))
        errors = tuple(parse_import_error(str(f), str(t)) for f, t in sorted(raw_errors.items()))
    except (KeyError, TypeError, ValueError) as exc:
        raise ControlPlaneError(f"the DAG loader returned a malformed report: {exc!r}") from exc
    return DagCheckResult(folder=folder, dags=dags, import_errors=errors)


def _summary_from_dict(raw: object) -> DagSummary:
    if not isinstance(raw, Mapping):
        raise TypeError(f"a DAG entry must be a JSON object, got {raw!r}")
    schedule = raw["schedule"]
    return DagSummary(
        dag_id=str(raw["dag_id"]),
        file=str(raw["file"]),
        owner=str(raw["owner"]),
        tags=tuple(sorted(str(t) for t in raw["tags"])),
        min_retries=int(raw["min_retries"]),
        task_count=int(raw["task_count"]),
        catchup=bool(raw["catchup"]),
        schedule=None if schedule is None else str(schedule),
        has_doc_md=bool(raw["has_doc_md"]),
        operators=tuple(sorted(str(o) for o in raw["operators"])),
    )


def check_dag_folder(
    folder: Path,
    *,
    python: Path | None = None,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
) -> DagCheckResult:
    """Load every DAG file under ``folder`` with real Airflow (in ``python``) and report.

    ``env`` (default: this process's environment) is what the DAG files see, so switches
    such as ``SAMPLE_DAGS_RUN_ON_ECS`` apply; Airflow's home, database and DAG folder are
    always replaced by throw-away values.
    """
    folder = folder.resolve()
    if not folder.is_dir():
        raise InvalidInputError(f"DAG folder {folder} does not exist or is not a directory")
    interpreter = str(python or sys.executable)
    with tempfile.TemporaryDirectory(prefix="afctl-dag-check-") as home:
        report_path = Path(home) / "report.json"
        child_env = {
            **(os.environ if env is None else env),
            "AIRFLOW_HOME": home,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__DAGS_FOLDER": str(folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "PYTHONDONTWRITEBYTECODE": "1",  # no __pycache__ in the checked folder
        }
        command = [interpreter, "-m", __name__, str(folder), str(report_path)]
        try:
            done = subprocess.run(
                command, env=child_env, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            raise InvalidInputError(
                f"loading the DAGs in {folder} did not finish within {timeout_s} s: "
                "a DAG file may block or do heavy work at import time"
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot run the Python interpreter {interpreter}: {exc}") from exc
        if done.returncode == _EXIT_NO_AIRFLOW:
            raise ConfigError(done.stderr.strip().splitlines()[-1])
        if done.returncode != 0 or not report_path.exists():
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            raise ControlPlaneError(f"the DAG loader failed (exit {done.returncode}):\n{tail}")
        report = json.loads(report_path.read_text())
    return result_from_report(str(folder), report)


def load_dag_folder(folder: Path) -> dict[str, Any]:
    """Run in the child: parse ``folder`` with Airflow's DagBag and return the raw report."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError as exc:
        raise ConfigError(
            f"Airflow is not importable by {sys.executable} ({exc}); run the check with the "
            "runtime environment (.venv/bin/afctl, `make venvs`) or pass --python .venv/bin/python"
        ) from exc
    bag = DagBag(dag_folder=str(folder), safe_mode=False, bundle_path=folder)
    dags = [_describe_dag(dag, folder) for dag in bag.dags.values()]
    return {"dags": dags, "import_errors": {str(f): str(t) for f, t in bag.import_errors.items()}}


def _describe_dag(dag: Any, folder: Path) -> dict[str, Any]:
    schedule = getattr(dag, "schedule", None)
    if schedule is not None and not isinstance(schedule, str):
        schedule = type(dag.timetable).__name__
    fileloc = Path(str(dag.fileloc))
    return {
        "dag_id": dag.dag_id,
        "file": str(fileloc.relative_to(folder)) if fileloc.is_relative_to(folder) else str(fileloc),
        "owner": dag.owner,
        "tags": sorted(str(t) for t in (dag.tags or ())),
        "min_retries": min((int(t.retries or 0) for t in dag.tasks), default=0),
        "task_count": len(dag.tasks),
        "catchup": bool(dag.catchup),
        "schedule": schedule,
        "has_doc_md": bool((dag.doc_md or "").strip()),
        "operators": sorted({type(t).__name__ for t in dag.tasks}),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point: ``python -m airflow_control_plane.dag_check FOLDER REPORT_JSON``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m airflow_control_plane.dag_check FOLDER REPORT_JSON", file=sys.stderr)
        return 2
    try:
        report = load_dag_folder(Path(args[0]))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return _EXIT_NO_AIRFLOW
    Path(args[1]).write_text(json.dumps(report, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
