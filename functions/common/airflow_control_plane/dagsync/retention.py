"""Which releases to keep, and deleting the others without ever exposing a partial release.

Age is "time since the release was built or last became live" (the release directory's
mtime, set when it is published), so a release that was live a minute ago is young even if
it was built last year. The live release is always kept.

Deleting renames ``releases/<id>`` to ``releases/.trash-<id>-<nonce>`` first (atomic), then
removes the tree: a directory named after a release is therefore always complete, and a
crash mid-delete leaves only trash, which the next sync removes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from airflow_control_plane.dagsync.publish import CURRENT_TMP_PREFIX, PIN_NAME
from airflow_control_plane.dagsync.release import MANIFEST_NAME, TMP_PREFIX, TREES, read_manifest

TRASH_PREFIX = ".trash-"


@dataclass(frozen=True)
class ReleaseInfo:
    release_id: str
    last_live_at: float
    is_live: bool


@dataclass(frozen=True)
class RetentionDecision:
    keep: tuple[str, ...]
    delete: tuple[str, ...]
    reason: str


def decide_retention(
    releases: Iterable[ReleaseInfo], *, now: float, keep_last: int, min_age_s: float
) -> RetentionDecision:
    """Keep the live release, the ``keep_last`` most recent ones and any younger than ``min_age_s``."""
    ordered = sorted(releases, key=lambda r: (r.last_live_at, r.release_id), reverse=True)
    recent = {r.release_id for r in ordered[: max(keep_last, 1)]}
    keep: list[str] = []
    delete: list[str] = []
    for info in ordered:
        young = now - info.last_live_at < min_age_s
        (keep if info.is_live or young or info.release_id in recent else delete).append(info.release_id)
    reason = (
        f"keeping {len(keep)} release(s) (live, the last {keep_last}, "
        f"and any younger than {min_age_s:.0f} s); "
        f"deleting {len(delete)}"
    )
    return RetentionDecision(tuple(keep), tuple(delete), reason)


def scan_releases(releases_dir: Path, live_id: str | None) -> list[ReleaseInfo]:
    """Complete releases only (a directory with a manifest); anything else is left alone."""
    infos = []
    for entry in os.scandir(releases_dir):
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        if not os.path.exists(os.path.join(entry.path, MANIFEST_NAME)):
            continue
        infos.append(
            ReleaseInfo(entry.name, entry.stat(follow_symlinks=False).st_mtime, entry.name == live_id)
        )
    return infos


def apply_retention(
    releases_dir: Path, decision: RetentionDecision, *, live_id: str | None, nonce: str
) -> None:
    for release_id in decision.delete:
        if release_id == live_id:  # belt and braces: never delete what is live
            continue
        trash = releases_dir / f"{TRASH_PREFIX}{release_id}-{nonce}"
        os.rename(releases_dir / release_id, trash)
        shutil.rmtree(trash)


def unreferenced_trees(releases_dir: Path, trees_dir: Path) -> list[str]:
    """Shared directories no complete release links to any more."""
    if not trees_dir.is_dir():
        return []
    referenced: set[str] = set()
    for entry in os.scandir(releases_dir):
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        manifest = read_manifest(Path(entry.path))
        if manifest is not None:
            referenced.update(manifest.dirs.values())
    return sorted(
        e.name for e in os.scandir(trees_dir) if not e.name.startswith(".") and e.name not in referenced
    )


def delete_trees(trees_dir: Path, keys: Iterable[str], *, nonce: str) -> None:
    for key in keys:
        trash = trees_dir / f"{TRASH_PREFIX}{key}-{nonce}"
        os.rename(trees_dir / key, trash)
        shutil.rmtree(trash)


def clean_leftovers(target: Path, releases_dir: Path) -> list[str]:
    """Remove what interrupted syncs left behind. Call only while holding the target's lock."""
    removed = []
    for folder in (releases_dir, target / TREES):
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            if entry.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                shutil.rmtree(entry.path)
                removed.append(f"{folder.name}/{entry.name}")
    for entry in os.scandir(target):
        if entry.name.startswith(CURRENT_TMP_PREFIX) or entry.name.startswith(f"{PIN_NAME}."):
            os.unlink(entry.path)
            removed.append(entry.name)
    return removed
