"""One sync, end to end: lock, clean leftovers, decide, build, verify, switch, retain, announce.

Every outside system is passed in (the Git source, the event publisher, the clock and the id
source), so the Lambda, the CLI, the local runtime and the tests run the same code.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from airflow_control_plane.dagsync.credentials import strip_userinfo
from airflow_control_plane.dagsync.decision import (
    Action,
    Relation,
    RollbackPin,
    SyncDecision,
    SyncInputs,
    decide_sync,
)
from airflow_control_plane.dagsync.errors import (
    GitAuthenticationError,
    RefNotFoundError,
    RemoteUnavailableError,
    SyncBusyError,
)
from airflow_control_plane.dagsync.events import RELEASE_PUBLISHED, SYNC_FAILED, EventPublisher
from airflow_control_plane.dagsync.git_source import GitSource, ResolvedRef, is_full_sha, normalise_subdir
from airflow_control_plane.dagsync.lock import FileLock
from airflow_control_plane.dagsync.publish import (
    LiveRelease,
    prepare_target,
    read_live,
    read_pin,
    switch_current,
    write_pin,
)
from airflow_control_plane.dagsync.release import (
    TREES,
    PreviousRelease,
    ReleaseManifest,
    ReleaseMeta,
    build_release,
    read_manifest,
    release_id_for,
)
from airflow_control_plane.dagsync.retention import (
    apply_retention,
    clean_leftovers,
    decide_retention,
    delete_trees,
    scan_releases,
    unreferenced_trees,
)
from airflow_control_plane.dagsync.webhook import SyncRequest
from airflow_control_plane.errors import ControlPlaneError, InvalidInputError

# A Lambda runs at most 15 minutes: a lock older than that (plus margin) has a dead holder.
DEFAULT_LOCK_TTL_S = 18 * 60


@dataclass(frozen=True)
class SyncSettings:
    repository: str
    ref: str
    target: Path
    subdir: str = ""
    keep_releases: int = 5
    min_release_age_s: float = 3600.0
    lock_ttl_s: float = DEFAULT_LOCK_TTL_S


@dataclass(frozen=True)
class Clock:
    """Time and ids are inputs: wall time, a monotonic timer for durations, and a unique id source."""

    now: Callable[[], float]
    monotonic: Callable[[], float]
    new_id: Callable[[], str]


@dataclass(frozen=True)
class SyncResult:
    action: str
    sha: str
    reason: str
    release_id: str | None = None
    files_written: int = 0
    files_linked: int = 0
    bytes_written: int = 0
    files_removed: int = 0
    dirs_created: int = 0
    dirs_reused: int = 0
    duration_s: float = 0.0
    deleted_releases: tuple[str, ...] = ()
    cleaned_leftovers: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["deleted_releases"] = list(self.deleted_releases)
        data["cleaned_leftovers"] = list(self.cleaned_leftovers)
        data["warnings"] = list(self.warnings)
        return data


def sync_once(
    settings: SyncSettings,
    request: SyncRequest,
    source: GitSource,
    publisher: EventPublisher,
    clock: Clock,
) -> SyncResult:
    """Run one sync. Raises a ControlPlaneError (and announces "DAG sync failed") on failure."""
    started = clock.monotonic()
    _validate_request(request)
    try:
        releases_dir = prepare_target(settings.target)
        with FileLock(settings.target, clock.new_id(), settings.lock_ttl_s, clock.now) as lock:
            cleaned = tuple(clean_leftovers(settings.target, releases_dir))
            run = _LockedSync(settings, request, source, clock, lock, releases_dir)
            result = run.execute(started, cleaned)
    except SyncBusyError:
        raise  # not a failure of the content: the caller retries
    except ControlPlaneError as exc:
        publisher.publish(
            SYNC_FAILED,
            {
                "repository": strip_userinfo(settings.repository),
                "ref": settings.ref,
                "requested_sha": request.rollback_to or request.sha,
                "trigger": request.trigger,
                "error": type(exc).__name__,
                "reason": str(exc),
            },
        )
        raise
    finally:
        source.close()
    if result.action == "published":
        publisher.publish(
            RELEASE_PUBLISHED,
            {
                "repository": strip_userinfo(settings.repository),
                "ref": settings.ref,
                "sha": result.sha,
                "release_id": result.release_id,
                "trigger": request.trigger,
                "files_changed": result.files_written + result.files_removed,
                "files_written": result.files_written,
                "bytes_written": result.bytes_written,
                "duration_s": result.duration_s,
                "reason": result.reason,
            },
        )
    return result


def _validate_request(request: SyncRequest) -> None:
    for name, value in (("sha", request.sha), ("rollback_to", request.rollback_to)):
        if value is not None and not is_full_sha(value):
            raise InvalidInputError(f"{name} must be a full 40-character commit id, got {value!r}")


class _LockedSync:
    """The steps that run while holding the target's lock."""

    def __init__(
        self,
        settings: SyncSettings,
        request: SyncRequest,
        source: GitSource,
        clock: Clock,
        lock: FileLock,
        releases_dir: Path,
    ) -> None:
        self.s = settings
        self.request = request
        self.source = source
        self.clock = clock
        self.lock = lock
        self.releases_dir = releases_dir
        self.subdir = normalise_subdir(settings.subdir)

    def execute(self, started: float, cleaned: tuple[str, ...]) -> SyncResult:
        live = read_live(self.s.target)
        live_sha = live.manifest.sha if live and live.manifest.subdir == self.subdir else None
        resolved, relation = self._resolve(live_sha)
        decision = decide_sync(
            SyncInputs(
                live_sha=live_sha,
                requested_sha=resolved.sha,
                ref_tip_sha=resolved.tip_sha,
                relation=relation,
                rollback=self.request.rollback_to is not None,
                pin=read_pin(self.s.target),
            )
        )
        if decision.action is not Action.PUBLISH:
            action = "noop" if decision.action is Action.NOOP else "refused"
            duration = self.clock.monotonic() - started
            return SyncResult(
                action, decision.sha, decision.reason, duration_s=duration, cleaned_leftovers=cleaned
            )
        return self._publish(decision, resolved, live, started, cleaned)

    def _resolve(self, live_sha: str | None) -> tuple[ResolvedRef, Relation]:
        want = self.request.rollback_to or self.request.sha
        rollback = self.request.rollback_to
        if rollback and read_manifest(self.releases_dir / release_id_for(rollback, self.subdir)):
            # the release is still on the target: roll back without the remote if it is down
            try:
                resolved = self.source.resolve(self.s.ref)
                return ResolvedRef(self.s.ref, resolved.tip_sha, rollback), Relation.UNKNOWN
            except (RemoteUnavailableError, GitAuthenticationError, RefNotFoundError):
                # the remote is down, the token expired or the ref is gone: roll back anyway; the
                # hold lasts until a sync sees a tip different from the live commit
                return ResolvedRef(self.s.ref, live_sha or rollback, rollback), Relation.UNKNOWN
        resolved = self.source.resolve(self.s.ref, want_sha=want)
        if live_sha is None:
            return resolved, Relation.UNKNOWN
        return resolved, self.source.relation(live_sha, resolved.sha)

    def _publish(
        self,
        decision: SyncDecision,
        resolved: ResolvedRef,
        live: LiveRelease | None,
        started: float,
        cleaned: tuple[str, ...],
    ) -> SyncResult:
        release_id = release_id_for(decision.sha, self.subdir)
        release_dir = self.releases_dir / release_id
        manifest = read_manifest(release_dir)
        reused = manifest is not None
        if manifest is None:
            manifest = self._build(decision.sha, live)
        now = self.clock.now()
        os.utime(release_dir, (now, now))  # "last became live": retention's age
        nonce = self.clock.new_id()
        self.lock.verify()
        if self.request.rollback_to:
            write_pin(self.s.target, RollbackPin(decision.sha, resolved.tip_sha), nonce)
        switch_current(self.s.target, release_id, nonce)
        deleted, warnings = self._retain(release_id, nonce)
        reason = decision.reason + (" (release already on the target: switched only)" if reused else "")
        return SyncResult(
            action="published",
            sha=decision.sha,
            reason=reason,
            release_id=release_id,
            files_written=0 if reused else manifest.files_written,
            files_linked=0 if reused else manifest.files_linked,
            bytes_written=0 if reused else manifest.bytes_written,
            files_removed=0 if reused else manifest.files_removed,
            dirs_created=0 if reused else manifest.dirs_created,
            dirs_reused=0 if reused else manifest.dirs_reused,
            duration_s=self.clock.monotonic() - started,
            deleted_releases=deleted,
            cleaned_leftovers=cleaned,
            warnings=warnings,
        )

    def _build(self, sha: str, live: LiveRelease | None) -> ReleaseManifest:
        tree = self.source.list_files(sha, self.subdir)
        previous = PreviousRelease(live.path, live.manifest, live.manifest.entries()) if live else None
        meta = ReleaseMeta(strip_userinfo(self.s.repository), self.s.ref, sha, self.subdir)
        return build_release(
            self.source,
            tree,
            self.releases_dir,
            meta,
            previous,
            now=self.clock.now(),
            nonce=self.clock.new_id(),
        )

    def _retain(self, live_id: str, nonce: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        decision = decide_retention(
            scan_releases(self.releases_dir, live_id),
            now=self.clock.now(),
            keep_last=self.s.keep_releases,
            min_age_s=self.s.min_release_age_s,
        )
        try:
            apply_retention(self.releases_dir, decision, live_id=live_id, nonce=nonce)
            trees_dir = self.s.target / TREES
            delete_trees(trees_dir, unreferenced_trees(self.releases_dir, trees_dir), nonce=nonce)
        except OSError as exc:  # the release is live; retention is retried by the next sync
            return (), (f"retention incomplete: {exc}",)
        return decision.delete, ()
