"""Connections, variables and pools applied at every ``afctl up`` from a settings folder.

``airflow_settings/`` at the repository root (or ``AFCTL_SETTINGS_DIR``) may hold
``connections.json|yaml|yml|env``, ``variables.json|yaml|yml|env`` and ``pools.json``, in
the formats of Airflow's own ``connections import``, ``variables import`` and ``pools
import`` (which ``up`` runs, overwriting entries of the same name). No folder, no files:
nothing to do. Secrets in these files end up in the metadata database (encrypted with the
environment's Fernet key): keep such files out of git.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from airflow_control_plane.local.paths import repo_root

SETTINGS_DIR_ENV = "AFCTL_SETTINGS_DIR"
_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("connections", (".json", ".yaml", ".yml", ".env")),
    ("variables", (".json", ".yaml", ".yml", ".env")),
    ("pools", (".json",)),
)


def settings_dir(env: Mapping[str, str] | None = None) -> Path:
    source = os.environ if env is None else env
    raw = source.get(SETTINGS_DIR_ENV, "").strip()
    return Path(raw).expanduser().resolve() if raw else repo_root() / "airflow_settings"


def import_commands(folder: Path) -> list[list[str]]:
    """The ``airflow`` argv (without the binary) that applies each file present, in order."""
    commands: list[list[str]] = []
    if not folder.is_dir():
        return commands
    for kind, suffixes in _KINDS:
        for suffix in suffixes:
            path = folder / f"{kind}{suffix}"
            if not path.is_file():
                continue
            if kind == "connections":
                commands.append(["connections", "import", str(path), "--overwrite"])
            elif kind == "variables":
                commands.append(["variables", "import", str(path), "--action-on-existing-key", "overwrite"])
            else:
                commands.append(["pools", "import", str(path)])
            break
    return commands
