"""The pure half of the DAG integrity check: import-error parsing, review rules, the report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from airflow_control_plane.cli import cli
from airflow_control_plane.dag_check import (
    DagSummary,
    check_dag_folder,
    parse_import_error,
    result_from_report,
    review_dag,
)
from airflow_control_plane.errors import ControlPlaneError, InvalidInputError

pytestmark = pytest.mark.unit

# Verbatim shapes of DagBag.import_errors values from Airflow 3.3.2 (trimmed paths).
MISSING_MODULE = """Traceback (most recent call last):
  File "<frozen importlib._bootstrap>", line 241, in _call_with_frames_removed
  File "/srv/dags/bad.py", line 2, in <module>
    import missing_mod_zz
ModuleNotFoundError: No module named 'missing_mod_zz'
"""
RAISED_IN_HELPER = """Traceback (most recent call last):
  File "/srv/dags/even_odd.py", line 170, in even_odd
    odd, even = _ecs_pick("odd"), _ecs_pick("even")
  File "/srv/dags/even_odd.py", line 76, in _required_env
    raise ValueError(f"{name} is required")
  File "/srv/lib/somewhere_else.py", line 9, in helper
    raise ValueError("x")
ValueError: SAMPLE_DAGS_ECS_CLUSTER is required
"""
SYNTAX_ERROR = """Traceback (most recent call last):
  File "<frozen importlib._bootstrap_external>", line 1004, in source_to_code
  File "/srv/dags/syn.py", line 2
    def f(:
          ^
SyntaxError: invalid syntax
"""

GOOD = DagSummary(
    dag_id="even_odd",
    file="even_odd.py",
    owner="platform",
    tags=("sample",),
    min_retries=2,
    task_count=4,
    catchup=False,
    schedule=None,
    has_doc_md=True,
    operators=("_PythonDecoratedOperator",),
)


def _raw(summary: DagSummary) -> dict[str, object]:
    return {**summary.__dict__, "tags": list(summary.tags), "operators": list(summary.operators)}


@pytest.mark.parametrize(
    ("file", "text", "line", "message"),
    [
        ("bad.py", MISSING_MODULE, 2, "ModuleNotFoundError: No module named 'missing_mod_zz'"),
        ("even_odd.py", RAISED_IN_HELPER, 76, "ValueError: SAMPLE_DAGS_ECS_CLUSTER is required"),
        ("syn.py", SYNTAX_ERROR, 2, "SyntaxError: invalid syntax"),
        ("syn.py", "invalid syntax (syn.py, line 7)", 7, "invalid syntax (syn.py, line 7)"),
        ("x.py", "AirflowDagCycleException: Cycle detected in DAG: x", None, None),
    ],
)
def test_import_error_text_becomes_file_line_and_message(
    file: str, text: str, line: int | None, message: str | None
) -> None:
    # GIVEN the text Airflow stores for a file that failed to import
    # WHEN it is parsed
    problem = parse_import_error(file, text)
    # THEN the line is that of the innermost frame in the failing file (None when absent)
    assert problem.file == file
    assert problem.line == line
    # AND the message is the exception line, with the full text kept as detail
    assert problem.message == (message or text)
    assert problem.detail == text.strip()


def test_empty_import_error_text_still_gives_a_message() -> None:
    assert parse_import_error("a.py", "  \n").message == "unknown import error"


def test_a_dag_following_the_house_rules_has_no_findings() -> None:
    assert review_dag(GOOD) == ()


@pytest.mark.parametrize(
    ("change", "finding"),
    [
        ({"owner": "airflow"}, "no owner"),
        ({"owner": " "}, "no owner"),
        ({"min_retries": 0}, "retries >= 1"),
        ({"tags": ()}, "no tags"),
        ({"catchup": True}, "catchup"),
        ({"has_doc_md": False}, "doc_md"),
    ],
)
def test_each_broken_house_rule_is_named(change: dict[str, object], finding: str) -> None:
    # GIVEN a DAG that breaks one rule
    dag = replace(GOOD, **change)  # type: ignore[arg-type]
    # WHEN it is reviewed
    findings = review_dag(dag)
    # THEN exactly that rule is reported
    assert len(findings) == 1
    assert finding in findings[0]


def test_report_becomes_a_sorted_typed_result_and_round_trips_to_json() -> None:
    # GIVEN a child report with two DAGs (unsorted) and one import error
    other = replace(GOOD, dag_id="fanout", file="fanout.py", tags=("b", "a"))
    report = {"dags": [_raw(other), _raw(GOOD)], "import_errors": {"bad.py": MISSING_MODULE}}
    # WHEN it is turned into the typed result
    result = result_from_report("/srv/dags", json.loads(json.dumps(report)))
    # THEN DAGs are sorted, tags sorted, the error parsed, and the result is not ok
    assert result.dag_ids == ("even_odd", "fanout")
    assert result.dags[1].tags == ("a", "b")
    assert [(e.file, e.line) for e in result.import_errors] == [("bad.py", 2)]
    assert result.ok is False
    as_dict = result.to_dict()
    assert as_dict["ok"] is False
    assert as_dict["dags"][0]["findings"] == []
    assert json.loads(json.dumps(as_dict)) == as_dict


def test_a_clean_report_is_ok_and_findings_are_separate() -> None:
    # GIVEN a report with no import errors but a DAG without tags
    report = {"dags": [_raw(replace(GOOD, tags=()))], "import_errors": {}}
    result = result_from_report("/srv/dags", report)
    # THEN the check is ok (every file imports) and the finding is reported on its own
    assert result.ok is True
    assert result.has_findings is True


@pytest.mark.parametrize(
    "report",
    [
        [],
        {"dags": []},
        {"dags": {}, "import_errors": {}},
        {"dags": [{"dag_id": "x"}], "import_errors": {}},
        {"dags": ["x"], "import_errors": {}},
    ],
)
def test_a_malformed_report_is_a_control_plane_error(report: object) -> None:
    with pytest.raises(ControlPlaneError, match="malformed report"):
        result_from_report("/srv/dags", report)


def test_a_missing_folder_is_invalid_input(tmp_path: Path) -> None:
    # GIVEN a path that does not exist; WHEN it is checked; THEN nothing runs and the error says why
    with pytest.raises(InvalidInputError, match="does not exist"):
        check_dag_folder(tmp_path / "nope")


def test_cli_rejects_a_missing_folder_before_loading_anything(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["dags", "check", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
