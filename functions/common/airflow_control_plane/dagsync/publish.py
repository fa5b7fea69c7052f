"""The live pointer: one ``current`` symlink, switched atomically, and the rollback pin.

Switching creates a new symlink under a temporary name and renames it over ``current``
(rename is atomic on POSIX filesystems and on NFS/EFS), so a reader resolving ``current``
gets the old release or the new one, never a missing link or a mix. The link is relative
(``releases/<id>``), so the folder works wherever it is mounted.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from airflow_control_plane.dagsync.decision import RollbackPin
from airflow_control_plane.dagsync.errors import TargetLayoutError
from airflow_control_plane.dagsync.release import (
    LEGACY_MANIFEST_NAME,
    RELEASES,
    ReleaseManifest,
    fsync_dir,
    read_manifest,
)

CURRENT = "current"
CURRENT_TMP_PREFIX = ".current.tmp-"
PIN_NAME = ".rollback-pin.json"


@dataclass(frozen=True)
class LiveRelease:
    release_id: str
    path: Path
    manifest: ReleaseManifest


def prepare_target(target: Path) -> Path:
    """Create ``releases/`` if needed; refuse a ``current`` that is not a symlink."""
    current = target / CURRENT
    if current.exists() and not current.is_symlink():
        raise TargetLayoutError(
            f"{current} exists and is not a symlink: move it away; DAG sync never overwrites a real folder"
        )
    releases = target / RELEASES
    releases.mkdir(parents=True, exist_ok=True)
    return releases


def read_live(target: Path) -> LiveRelease | None:
    """The release ``current`` points at, or None before the first publish."""
    try:
        link = os.readlink(target / CURRENT)
    except FileNotFoundError:
        return None
    release_id = Path(link).name
    path = target / RELEASES / release_id
    manifest = read_manifest(target, release_id) or _legacy_manifest(path, release_id)
    if manifest is None:
        raise TargetLayoutError(f"{target / CURRENT} points at {link}, which has no release manifest")
    return LiveRelease(release_id, path, manifest)


def _legacy_manifest(path: Path, release_id: str) -> ReleaseManifest | None:
    """A release built before per-folder metadata: only its commit is used (ordering); the next
    build writes every file once, and retention leaves such folders alone (remove them by hand)."""
    try:
        data = json.loads((path / LEGACY_MANIFEST_NAME).read_text())
        return ReleaseManifest(
            release_id=release_id,
            repository=str(data["repository"]),
            ref=str(data["ref"]),
            sha=str(data["sha"]),
            subdir=str(data["subdir"]),
            built_at=float(data["built_at"]),
            root_key="",
        )
    except (FileNotFoundError, NotADirectoryError, ValueError, KeyError, TypeError):
        return None


def switch_current(target: Path, release_id: str, nonce: str) -> None:
    """Point ``current`` at ``releases/<release_id>`` atomically."""
    if read_manifest(target, release_id) is None:
        raise TargetLayoutError(f"release {release_id} is not complete: refusing to publish it")
    tmp = target / f"{CURRENT_TMP_PREFIX}{nonce}"
    os.symlink(f"{RELEASES}/{release_id}", tmp)
    os.replace(tmp, target / CURRENT)
    fsync_dir(target)


def read_pin(target: Path) -> RollbackPin | None:
    try:
        data = json.loads((target / PIN_NAME).read_text())
        return RollbackPin(sha=str(data["sha"]), ref_tip_at_pin=str(data["ref_tip_at_pin"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def write_pin(target: Path, pin: RollbackPin, nonce: str) -> None:
    """Write the pin atomically. It only counts while its sha is live (see decision.decide_sync)."""
    tmp = target / f"{PIN_NAME}.{nonce}"
    tmp.write_text(json.dumps({"sha": pin.sha, "ref_tip_at_pin": pin.ref_tip_at_pin}))
    os.replace(tmp, target / PIN_NAME)
