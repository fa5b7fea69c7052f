"""Static checks of the deployable stack, beyond `sam validate --lint` and `sam build`.

    .venv-dev/bin/python -m tests.static [TEMPLATE]      (default: template.yaml)

1. translate: the SAM template -> plain CloudFormation with the SAM translator, offline (no
   AWS credentials: local code paths become placeholder S3 locations, state machine
   DefinitionUri files are inlined so their ASL is linted too). Written to
   .aws-sam/static-checks/<name>.translated.json.
2. cfn-lint on the translated template (cfn-lint no longer transforms SAM itself).
3. checkov on the translated template: zero failed checks; every skip in the template must
   carry a written comment.
4. template rules: what those tools do not check (secrets only through `Secrets`, the same
   secret ARNs in every Airflow component, execution role != task role, EFS read-only except
   for the DAG sync, encryption of RDS/Redis/EFS/S3, handler paths and DefinitionSubstitutions
   exist, environment variables match the code, worker shutdown settings, ...). Each rule is a
   function returning human-readable violations, so the unit tests and the broken fixture
   (tests/fixtures/broken_template.yaml) share them.

Exit status 0 only if every check passed. `sam validate --lint` is run by `make sam` on
template.yaml; :func:`run_sam_validate` is here so the broken fixture can be checked with it.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_control_plane import worker_queues
from tests.static import rules as template_rules

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEMPLATE = REPO_ROOT / "template.yaml"
OUTPUT_DIR = REPO_ROOT / ".aws-sam" / "static-checks"
VENV_BIN = Path(sys.executable).parent
PLACEHOLDER_BUCKET = "static-checks-placeholder"
# Pseudo parameters given to the translator (it never calls AWS with them).
PSEUDO_PARAMETERS = {"AWS::Region": "us-east-1", "AWS::Partition": "aws", "AWS::AccountId": "123456789012"}
TOOL_TIMEOUT_S = 300
OFFLINE_ENV = {
    "SAM_CLI_TELEMETRY": "0",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "BC_SKIP_MAPPING": "TRUE",
    "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false",
}


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    summary: str
    details: tuple[str, ...] = field(default_factory=tuple)
    seconds: float = 0.0

    def render(self) -> str:
        head = f"[{'PASS' if self.passed else 'FAIL'}] {self.name} ({self.seconds:.1f} s): {self.summary}"
        return "\n".join([head, *(f"    - {line}" for line in self.details)])


# ---------------------------------------------------------------------- loading/translating


def load_template(path: Path) -> dict[str, Any]:
    """Parse a CloudFormation/SAM YAML or JSON template (short-form tags become Fn:: dicts)."""
    from cfnlint.decode import cfn_yaml

    loaded = json.loads(path.read_text()) if path.suffix == ".json" else cfn_yaml.load(str(path))
    if not isinstance(loaded, dict) or "Resources" not in loaded:
        raise ValueError(f"{path} is not a CloudFormation template (no Resources)")
    return _plain(loaded)


def _plain(node: Any) -> Any:
    """cfn-lint's node classes -> plain dict/list/str (deep copies, JSON-serialisable)."""
    if isinstance(node, Mapping):
        return {str(key): _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    if isinstance(node, str):
        return str(node)
    return node


def _inline_state_machine(props: dict[str, Any], base: Path) -> None:
    uri = props.pop("DefinitionUri", None)
    if isinstance(uri, str):
        asl = base / uri
        if not asl.is_file():
            raise FileNotFoundError(f"DefinitionUri {uri} does not exist")
        props["Definition"] = json.loads(asl.read_text())


def prepare_for_translation(template: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """Replace local artifact paths so the translator runs offline; inline ASL definitions."""
    prepared = copy.deepcopy(dict(template))
    for logical_id, resource in prepared.get("Resources", {}).items():
        props = resource.get("Properties") or {}
        kind = resource.get("Type")
        if kind == "AWS::Serverless::Function" and isinstance(props.get("CodeUri"), str):
            props["CodeUri"] = f"s3://{PLACEHOLDER_BUCKET}/{logical_id}.zip"
        elif kind == "AWS::Serverless::LayerVersion" and isinstance(props.get("ContentUri"), str):
            props["ContentUri"] = f"s3://{PLACEHOLDER_BUCKET}/{logical_id}.zip"
        elif kind == "AWS::Serverless::StateMachine":
            _inline_state_machine(props, base)
    return prepared


def _no_managed_policies() -> dict[str, str]:
    """The translator asks for AWS managed policy names only when a template names one
    (SAM policy shortcuts); this template uses full ARNs, so an empty map keeps it offline."""
    return {}


def translate(template: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """SAM -> CloudFormation offline: a boto3 session with a region and no real credentials
    (the translator only reads the region from it), and no managed-policy lookups."""
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator
    from samtranslator.utils.py27hash_fix import (
        to_py27_compatible_template,
        undo_mark_unicode_str_in_template,
    )

    prepared = prepare_for_translation(template, base)
    session = boto3.session.Session(
        region_name=PSEUDO_PARAMETERS["AWS::Region"],
        aws_access_key_id="offline",
        aws_secret_access_key="offline",
    )
    parameters = dict(PSEUDO_PARAMETERS)
    to_py27_compatible_template(prepared, parameters)
    translated = Translator(None, Parser(), boto_session=session).translate(
        prepared, parameter_values=parameters, get_managed_policy_map=_no_managed_policies
    )
    result = json.loads(json.dumps(undo_mark_unicode_str_in_template(translated)))
    _plain_definition_strings(result)
    # The translator drops the template-level Metadata; keep it for cfn-lint's config and docs.
    if "Metadata" in template and "Metadata" not in result:
        result["Metadata"] = json.loads(json.dumps(template["Metadata"]))
    return result


def _plain_definition_strings(translated: dict[str, Any]) -> None:
    """The translator writes an inline definition as Fn::Join of its lines; cfn-lint validates
    the ASL (E3601) only in a plain string, so join literal-only lines back (same value)."""
    for resource in translated.get("Resources", {}).values():
        if resource.get("Type") != "AWS::StepFunctions::StateMachine":
            continue
        props = resource.get("Properties", {})
        join = (
            (props.get("DefinitionString") or {}).get("Fn::Join")
            if isinstance(props.get("DefinitionString"), dict)
            else None
        )
        if isinstance(join, list) and len(join) == 2 and all(isinstance(line, str) for line in join[1]):
            props["DefinitionString"] = join[0].join(join[1])


def write_translated(template_path: Path, output_dir: Path = OUTPUT_DIR) -> Path:
    translated = translate(load_template(template_path), template_path.parent)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"{template_path.stem}.translated.json"
    target.write_text(json.dumps(translated, indent=1, sort_keys=False))
    return target


# ---------------------------------------------------------------------- external tools


def _run_tool(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **OFFLINE_ENV, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=TOOL_TIMEOUT_S, check=False)


def run_cfn_lint(translated: Path) -> CheckResult:
    started = time.monotonic()
    # W1020 (needless Fn::Sub) is an artefact of the translator, which resolves parameter
    # defaults inside layer names; the source template is linted with it by `sam validate --lint`.
    # A command-line --ignore-checks replaces the template's own list, so both are passed.
    metadata = json.loads(translated.read_text()).get("Metadata") or {}
    ignored = list(((metadata.get("cfn-lint") or {}).get("config") or {}).get("ignore_checks") or [])
    proc = _run_tool(
        [
            str(VENV_BIN / "cfn-lint"),
            "--format",
            "parseable",
            "--ignore-checks",
            *ignored,
            "W1020",
            "--",
            str(translated),
        ]
    )
    findings = tuple(line for line in proc.stdout.splitlines() if line.strip())
    passed = proc.returncode == 0 and not findings
    summary = "no findings" if passed else f"{len(findings)} finding(s), exit {proc.returncode}"
    if proc.returncode != 0 and not findings:
        findings = tuple(proc.stderr.strip().splitlines()[-5:])
    return CheckResult("cfn-lint (translated)", passed, summary, findings, time.monotonic() - started)


def run_checkov(translated: Path) -> CheckResult:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="checkov-") as tmp:
        report = Path(tmp) / "results_json.json"
        proc = _run_tool(
            [
                str(VENV_BIN / "checkov"),
                "--file",
                str(translated),
                "--framework",
                "cloudformation",
                "--compact",
                "--skip-download",
                "--output",
                "json",
                "--output-file-path",
                tmp,
            ]
        )
        if not report.exists():
            tail = tuple((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            return CheckResult("checkov (translated)", False, "checkov wrote no report", tail)
        data = json.loads(report.read_text())
    if not isinstance(data, dict):  # a list when several frameworks ran; we ask for one
        return CheckResult("checkov (translated)", False, "unexpected report shape", (str(data)[:300],))
    results = data.get("results", {})
    failed = results.get("failed_checks", [])
    skipped = results.get("skipped_checks", [])
    details = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in failed]
    details += [
        f"{c['check_id']} {c['resource']}: skipped without a written comment"
        for c in skipped
        if not str((c.get("check_result") or {}).get("suppress_comment") or "").strip()
        or (c.get("check_result") or {}).get("suppress_comment") == "No comment provided"
    ]
    passed = proc.returncode == 0 and not details
    summary = f"{len(results.get('passed_checks', []))} passed, {len(failed)} failed, {len(skipped)} skipped"
    return CheckResult("checkov (translated)", passed, summary, tuple(details), time.monotonic() - started)


def run_sam_validate(template: Path) -> CheckResult:
    started = time.monotonic()
    proc = _run_tool([str(VENV_BIN / "sam"), "validate", "--lint", "--template", str(template)])
    output = (proc.stdout + proc.stderr).strip()
    details = tuple(output.splitlines()[-5:]) if proc.returncode else ()
    return CheckResult(
        "sam validate --lint",
        proc.returncode == 0,
        "valid" if proc.returncode == 0 else f"exit {proc.returncode}",
        details,
        time.monotonic() - started,
    )


def run_template_rules(
    template: Mapping[str, Any], base: Path, template_path: Path | None = None
) -> CheckResult:
    started = time.monotonic()
    violations = tuple(template_rules.all_violations(template, base))
    if template_path is not None:  # the worker blocks rendered from worker_queues.json
        violations += tuple(worker_queues.drift(template_path, base / "worker_queues.json"))
    return CheckResult(
        "template rules",
        not violations,
        f"{len(template_rules.RULES)} rules, {len(violations)} violation(s)",
        violations,
        time.monotonic() - started,
    )


def run_all(template_path: Path) -> Iterator[CheckResult]:
    started = time.monotonic()
    try:
        translated = write_translated(template_path)
    except Exception as exc:  # the translator's errors are the finding
        yield CheckResult("SAM translation", False, f"{type(exc).__name__}", (str(exc)[:2000],))
        return
    yield CheckResult("SAM translation", True, f"wrote {translated}", (), time.monotonic() - started)
    yield run_cfn_lint(translated)
    yield run_checkov(translated)
    yield run_template_rules(load_template(template_path), template_path.parent, template_path)


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    args = sys.argv[1:] if argv is None else argv
    template = Path(args[0]).resolve() if args else DEFAULT_TEMPLATE
    ok = True
    for result in run_all(template):
        out(result.render())
        ok = ok and result.passed
    out("static checks: " + ("all passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
