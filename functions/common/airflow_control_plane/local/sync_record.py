"""What ``afctl status`` tells about DAG sync: the last outcome and the last refusal.

``up`` and ``afctl sync`` record each local sync's outcome in ``run/dagsync-status.json``
(the last one, and the last refused or failed one with its reason), so a refusal stays
visible after the command's output is gone. Also: the DAG changes a sync cannot publish
because they are not committed.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow_control_plane.local.files import read_json, write_json
from airflow_control_plane.local.paths import StatePaths


def _file(paths: StatePaths) -> Path:
    return paths.run / "dagsync-status.json"


def record_sync(paths: StatePaths, *, action: str, reason: str, sha: str | None, trigger: str) -> None:
    """Keep the last outcome; a refused or failed one is also kept as the last refusal."""
    if not paths.root.is_dir():
        return
    paths.run.mkdir(parents=True, exist_ok=True)
    data = read_sync_record(paths)
    entry: dict[str, str | None] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "action": action,
        "reason": reason,
        "sha": sha,
        "trigger": trigger,
    }
    data["last"] = entry
    if action in ("refused", "failed"):
        data["last_refused"] = entry
    write_json(_file(paths), data)


def read_sync_record(paths: StatePaths) -> dict[str, Any]:
    data = read_json(_file(paths))
    return data if isinstance(data, dict) else {}


def uncommitted_changes(repository: str, subdir: str) -> list[str]:
    """Paths under ``subdir`` of a local checkout that differ from its HEAD (or are untracked).

    Empty when the repository is not a local checkout or git is not at hand: the warning is
    a help, never a reason to refuse.
    """
    root = Path(repository.removeprefix("file://"))
    if "://" in repository and not repository.startswith("file://"):
        return []
    if not (root / ".git").exists():
        return []
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", subdir or "."],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    return [line[3:] for line in done.stdout.splitlines() if line.strip()]


def uncommitted_warning(repository: str, subdir: str) -> str | None:
    changed = uncommitted_changes(repository, subdir)
    if not changed:
        return None
    shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    return (
        f"{len(changed)} uncommitted DAG change(s) are not published: {shown}. Commit them and run "
        "`afctl sync`, or read the working tree directly with AFCTL_DAGS_SOURCE=folder `afctl up`"
    )
