"""The static checks (tests/static/tools.py) against the real tools: the SAM translator,
cfn-lint, checkov and `sam validate --lint`, all offline.

template.yaml must pass every check; tests/fixtures/broken_template.yaml must be rejected by
every one of them, so each check is known to be active.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.static import tools

pytestmark = pytest.mark.contract

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "template.yaml"
BROKEN = REPO_ROOT / "tests" / "fixtures" / "broken_template.yaml"


@pytest.fixture(scope="module")
def template_results() -> dict[str, tools.CheckResult]:
    return {result.name: result for result in tools.run_all(TEMPLATE)}


@pytest.fixture(scope="module")
def broken_results() -> dict[str, tools.CheckResult]:
    return {result.name: result for result in tools.run_all(BROKEN)}


def test_template_passes_every_static_check(template_results: dict[str, tools.CheckResult]) -> None:
    # GIVEN template.yaml WHEN translated, linted, scanned and ruled
    # THEN every check ran and passed
    assert set(template_results) == {
        "SAM translation",
        "cfn-lint (translated)",
        "checkov (translated)",
        "template rules",
    }
    failures = [r.render() for r in template_results.values() if not r.passed]
    assert failures == []


def test_translation_inlines_and_validates_state_machines(
    template_results: dict[str, tools.CheckResult],
) -> None:
    # GIVEN the translated template written by the checks
    translated = tools.json.loads((tools.OUTPUT_DIR / "template.translated.json").read_text())
    machines = [
        r for r in translated["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"
    ]
    # THEN both state machines carry their ASL as a plain string (what cfn-lint validates)
    assert len(machines) == 2
    assert all(isinstance(m["Properties"]["DefinitionString"], str) for m in machines)


def test_broken_fixture_translates(broken_results: dict[str, tools.CheckResult]) -> None:
    assert broken_results["SAM translation"].passed


def test_cfn_lint_rejects_the_broken_fixture(broken_results: dict[str, tools.CheckResult]) -> None:
    result = broken_results["cfn-lint (translated)"]
    details = "\n".join(result.details)
    # THEN it fails on the bogus property and on the invalid ASL inside the state machine
    assert not result.passed
    assert "E3002" in details
    assert "NoSuchProperty" in details
    assert "E3601" in details
    assert "Tsak" in details


def test_checkov_rejects_the_broken_fixture(broken_results: dict[str, tools.CheckResult]) -> None:
    result = broken_results["checkov (translated)"]
    details = "\n".join(result.details)
    # THEN it reports failed checks, and the skip without a written reason
    assert not result.passed
    assert "AWS::RDS::DBInstance.Database" in details
    assert "CKV_AWS_18 AWS::S3::Bucket.LogsBucket: skipped without a written comment" in details


def test_template_rules_reject_the_broken_fixture(broken_results: dict[str, tools.CheckResult]) -> None:
    result = broken_results["template rules"]
    assert not result.passed
    fired = {line.split(":", 1)[0] for line in result.details}
    assert fired == {rule.__name__ for rule in tools.template_rules.RULES}


def test_sam_validate_lint_rejects_the_broken_fixture() -> None:
    # GIVEN the broken fixture WHEN `sam validate --lint` runs on it THEN it fails
    result = tools.run_sam_validate(BROKEN)
    assert not result.passed
    assert "E3002" in "\n".join(result.details)
    assert "NoSuchProperty" in "\n".join(result.details)


def test_main_reports_and_sets_the_exit_status() -> None:
    # GIVEN the command-line entry point WHEN run on the broken fixture
    lines: list[str] = []
    status = tools.main([str(BROKEN)], out=lines.append)
    # THEN it prints each check and exits non-zero
    assert status == 1
    assert lines[-1] == "static checks: FAILED"
    assert any(line.startswith("[FAIL] checkov") for line in lines)
