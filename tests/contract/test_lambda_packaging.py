"""Every Lambda handler imports with only what the python3.11 Lambda runtime provides
(the standard library and boto3/botocore) plus the ControlPlaneLayer built from the lock.

The dev environment has many more packages (moto brings aws-xray-sdk, for one), so a
handler can pass every other test and still fail with ModuleNotFoundError on AWS; this
test builds the layer content the way `sam build` does and imports each handler against
it in an isolated interpreter.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.contract

UV = REPO_ROOT / ".venv-tools" / "bin" / "uv"
HANDLERS = sorted(p.parent for p in (REPO_ROOT / "functions").glob("*/app.py"))
# What the AWS python3.11 runtime ships besides the standard library.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")


@pytest.fixture(scope="module")
def layer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The layer's python/ folder: the locked Lambda dependencies and the shared package."""
    if not UV.exists():
        pytest.fail(f"{UV} is missing: run `make venvs`")
    target = tmp_path_factory.mktemp("layer") / "python"
    subprocess.run(
        [
            str(UV),
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--require-hashes",
            "--python",
            sys.executable,
            "--target",
            str(target),
            "-r",
            str(REPO_ROOT / "functions/common/requirements.txt"),
        ],
        check=True,
        timeout=300,
    )
    shutil.copytree(REPO_ROOT / "functions/common/airflow_control_plane", target / "airflow_control_plane")
    return target


@pytest.fixture(scope="module")
def runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding only the packages the Lambda runtime provides (linked from this env)."""
    folder = tmp_path_factory.mktemp("runtime")
    for name in RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        assert spec is not None, f"{name} missing from the dev environment"
        assert spec.origin is not None, f"{name} has no file origin"
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (folder / source.name).symlink_to(source)
    return folder


def test_there_are_handlers_to_check() -> None:
    assert len(HANDLERS) >= 6, HANDLERS


@pytest.mark.parametrize("handler_dir", HANDLERS, ids=[p.name for p in HANDLERS])
def test_handler_imports_on_the_lambda_runtime(handler_dir: Path, layer_dir: Path, runtime_dir: Path) -> None:
    # GIVEN an interpreter without site-packages: the handler's folder, the layer, and boto3
    code = (
        "import sys; "
        f"sys.path[:0] = [{str(handler_dir)!r}, {str(layer_dir)!r}, {str(runtime_dir)!r}]; "
        "import app; "
        "assert callable(app.lambda_handler)"
    )
    # WHEN the handler module is imported, as the Lambda runtime does on a cold start
    result = subprocess.run(
        [sys.executable, "-S", "-I", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"},
    )
    # THEN it imports: every module it needs is in the layer or the runtime
    assert result.returncode == 0, result.stderr[-2000:]
