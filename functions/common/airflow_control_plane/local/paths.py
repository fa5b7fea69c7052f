"""The one local state folder and its layout.

Everything the local runtime writes lives under one git-ignored folder: ``.local/`` at the
repository root, or ``AFCTL_STATE_DIR``. Nothing else on the machine is touched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from airflow_control_plane.errors import ConfigError

STATE_DIR_ENV = "AFCTL_STATE_DIR"
# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107


def repo_root() -> Path:
    """The repository this package is installed from (editable install), else the cwd."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "functions").is_dir():
            return parent
    return Path.cwd()


@dataclass(frozen=True)
class StatePaths:
    """Where each piece of local state lives, under one root."""

    root: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StatePaths:
        source = os.environ if env is None else env
        raw = source.get(STATE_DIR_ENV, "").strip()
        root = Path(raw).expanduser() if raw else repo_root() / ".local"
        return cls(root.resolve())

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def logs(self) -> Path:
        """One log file per service process, the supervisor's and each one-off job's."""
        return self.root / "logs"

    @property
    def run(self) -> Path:
        """Runtime files: the supervisor's pid, socket, desired counts and process table."""
        return self.root / "run"

    @property
    def supervisor_pid(self) -> Path:
        return self.run / "supervisor.pid"

    @property
    def supervisor_socket(self) -> Path:
        return self.run / "supervisor.sock"

    @property
    def supervisor_log(self) -> Path:
        return self.logs / "supervisor.log"

    @property
    def supervisor_spec(self) -> Path:
        """The service definitions (commands and environment) the supervisor runs; 0600."""
        return self.run / "services.json"

    @property
    def desired_counts(self) -> Path:
        return self.run / "desired.json"

    @property
    def process_table(self) -> Path:
        """Pids, process groups and start times of live service processes (orphan cleanup)."""
        return self.run / "processes.json"

    @property
    def secrets(self) -> Path:
        """Fernet key, API secret key and JWT secret shared by every component; 0600."""
        return self.root / "secrets.json"

    @property
    def credentials(self) -> Path:
        """The generated admin user name and password; 0600."""
        return self.root / "credentials.json"

    @property
    def flower_credentials(self) -> Path:
        """Flower's basic-auth user and password (AFCTL_FLOWER); 0600."""
        return self.root / "flower-credentials.json"

    @property
    def settings(self) -> Path:
        """Settings chosen at the first ``up`` and kept (the API port), and the migration record."""
        return self.root / "state.json"

    def ensure(self) -> None:
        for folder in (self.root, self.airflow_home, self.logs, self.run):
            folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        if len(os.fsencode(self.supervisor_socket)) > _MAX_SOCKET_PATH:
            raise ConfigError(
                f"state folder path is too long for a unix socket ({self.supervisor_socket}); "
                f"set {STATE_DIR_ENV} to a shorter path"
            )
