"""Which releases to keep, and deleting the others without ever exposing a partial release.

Age is "time since the release was built or last became live" (its manifest's mtime, set
when it is published), so a release that was live a minute ago is young even if it was
built last year. The live release is always kept, and so is every release a queued or
running DAG run uses (Airflow pins a run to its bundle version, which is the release id):
those are read from the metadata database through :class:`ReleasesInUse`; when that read
fails nothing is deleted (the safe default).

Deleting renames ``releases/<id>`` to ``releases/.trash-<id>-<nonce>`` first (atomic), so a
name that is a release is always complete. The folders only the deleted releases used are
found by walking the deleted and the kept releases side by side from their roots, descending
only where their folder keys differ: the work is proportional to how much the releases
differ, not to the repository. A marker ``.pending-<nonce>`` is held while a build or a
deletion runs; one left by a killed sync makes the next sync sweep every folder no release
reaches (a full walk, paid only after a crash).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from airflow_control_plane.dagsync.publish import CURRENT_TMP_PREFIX, PIN_NAME
from airflow_control_plane.dagsync.release import (
    MANIFEST_SUFFIX,
    RELEASES,
    TMP_PREFIX,
    TREES,
    folder_keys,
    read_folder_meta,
    read_manifest,
    tree_key,
)
from airflow_control_plane.errors import InvalidInputError

TRASH_PREFIX = ".trash-"
PENDING_PREFIX = ".pending-"


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
    releases: Iterable[ReleaseInfo],
    *,
    now: float,
    keep_last: int,
    min_age_s: float,
    in_use: frozenset[str] | None = frozenset(),
    in_use_problem: str = "",
) -> RetentionDecision:
    """Keep the live release, those DAG runs use, the ``keep_last`` most recent and any younger
    than ``min_age_s``. ``in_use=None`` (the runs could not be read): keep everything."""
    ordered = sorted(releases, key=lambda r: (r.last_live_at, r.release_id), reverse=True)
    if in_use is None:
        return RetentionDecision(
            tuple(r.release_id for r in ordered),
            (),
            f"keeping all {len(ordered)} release(s): the DAG runs using them could not be read "
            f"({in_use_problem or 'unknown error'})",
        )
    recent = {r.release_id for r in ordered[: max(keep_last, 1)]}
    keep: list[str] = []
    delete: list[str] = []
    for info in ordered:
        young = now - info.last_live_at < min_age_s
        used = info.release_id in in_use
        (keep if info.is_live or young or used or info.release_id in recent else delete).append(
            info.release_id
        )
    used_kept = sorted(r for r in keep if r in in_use)
    reason = (
        f"keeping {len(keep)} release(s) (live, the last {keep_last}, any younger than {min_age_s:.0f} s"
        f", and {len(used_kept)} used by queued or running DAG runs); deleting {len(delete)}"
    )
    return RetentionDecision(tuple(keep), tuple(delete), reason)


def release_ids(target: Path) -> list[str]:
    """Names of complete releases (a link and a manifest); anything else is left alone."""
    releases_dir = target / RELEASES
    ids = []
    for entry in os.scandir(releases_dir):
        if entry.name.startswith(".") or entry.name.endswith(MANIFEST_SUFFIX) or not entry.is_symlink():
            continue
        if os.path.exists(os.path.join(releases_dir, entry.name + MANIFEST_SUFFIX)):
            ids.append(entry.name)
    return ids


def scan_releases(target: Path, live_id: str | None) -> list[ReleaseInfo]:
    infos = []
    for release_id in release_ids(target):
        try:
            mtime = (target / RELEASES / f"{release_id}{MANIFEST_SUFFIX}").stat().st_mtime
        except FileNotFoundError:
            continue
        infos.append(ReleaseInfo(release_id, mtime, release_id == live_id))
    return infos


def apply_retention(
    target: Path, decision: RetentionDecision, *, live_id: str | None, nonce: str
) -> tuple[str, ...]:
    """Delete the releases the decision names, then the folders only they used."""
    doomed = [r for r in decision.delete if r != live_id]  # belt and braces: never what is live
    if not doomed:
        return ()
    roots = {r: m.root_key for r in release_ids(target) if (m := read_manifest(target, r)) is not None}
    kept_roots = [k for r, k in roots.items() if r not in doomed and k]
    with pending(target, nonce):
        releases_dir = target / RELEASES
        for release_id in doomed:
            trash = releases_dir / f"{TRASH_PREFIX}{release_id}-{nonce}"
            os.rename(releases_dir / release_id, trash)
            os.unlink(trash)
            (releases_dir / f"{release_id}{MANIFEST_SUFFIX}").unlink(missing_ok=True)
        unused: set[str] = set()
        for release_id in doomed:
            if roots.get(release_id):
                unused.update(exclusive_keys(target / TREES, roots[release_id], kept_roots))
        delete_trees(target / TREES, sorted(unused), nonce=nonce)
    return tuple(doomed)


def exclusive_keys(trees_dir: Path, root: str, kept_roots: list[str]) -> Iterator[str]:
    """Folder keys reachable from ``root`` that no kept release has (keys are per path, so a
    kept release shares a folder exactly when its key at the same path is the same)."""
    stack: list[tuple[str, list[str]]] = [(root, kept_roots)]
    while stack:
        key, others = stack.pop()
        if key in others:
            continue  # shared with a kept release, and so is everything below it
        yield key
        meta = read_folder_meta(trees_dir, key)
        if meta is None:
            continue
        other_metas = [m for k in others if (m := read_folder_meta(trees_dir, k)) is not None]
        for name, tree_id in meta.dirs.items():
            child_path = f"{meta.path}/{name}" if meta.path else name
            child_others = [tree_key(m.dirs[name], child_path) for m in other_metas if name in m.dirs]
            stack.append((tree_key(tree_id, child_path), child_others))


def delete_trees(trees_dir: Path, keys: Iterable[str], *, nonce: str) -> None:
    for key in keys:
        folder = trees_dir / key
        if folder.is_dir():
            trash = trees_dir / f"{TRASH_PREFIX}{key}-{nonce}"
            os.rename(folder, trash)
            shutil.rmtree(trash)
        (trees_dir / f"{key}{MANIFEST_SUFFIX}").unlink(missing_ok=True)


def full_sweep(target: Path, nonce: str) -> list[str]:
    """Delete every folder no complete release reaches (after a killed build or deletion)."""
    trees_dir = target / TREES
    if not trees_dir.is_dir():
        return []
    reached: set[str] = set()
    for release_id in release_ids(target):
        manifest = read_manifest(target, release_id)
        if manifest is not None and manifest.root_key:
            reached.update(folder_keys(trees_dir, manifest.root_key))
    stored = {
        e.name.removesuffix(MANIFEST_SUFFIX) for e in os.scandir(trees_dir) if not e.name.startswith(".")
    }
    orphans = sorted(stored - reached)
    delete_trees(trees_dir, orphans, nonce=nonce)
    return orphans


@contextlib.contextmanager
def pending(target: Path, nonce: str) -> Iterator[None]:
    """Mark a build or deletion in progress; a marker left behind means a sync was killed in it."""
    marker = target / f"{PENDING_PREFIX}{nonce}"
    marker.touch()
    try:
        yield
    except InvalidInputError:  # refused before anything was written (a file does not compile)
        marker.unlink(missing_ok=True)
        raise
    marker.unlink(missing_ok=True)


def clean_leftovers(target: Path) -> tuple[list[str], bool]:
    """Remove what interrupted syncs left behind. Call only while holding the target's lease.

    Returns what was removed, and whether a full sweep of unreachable folders is needed.
    """
    removed = []
    interrupted = False
    for folder in (target / RELEASES, target / TREES):
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            if entry.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed.append(f"{folder.name}/{entry.name}")
                interrupted = True
    for entry in os.scandir(target):
        if entry.name.startswith(CURRENT_TMP_PREFIX) or entry.name.startswith(f"{PIN_NAME}."):
            os.unlink(entry.path)
            removed.append(entry.name)
        elif entry.name.startswith(PENDING_PREFIX):
            interrupted = True
    return removed, interrupted


def clear_pending_markers(target: Path) -> None:
    for entry in os.scandir(target):
        if entry.name.startswith(PENDING_PREFIX):
            os.unlink(entry.path)
