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
from airflow_control_plane.dagsync.deadline import Deadline
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
    RepositoryNotFoundError,
    SyncBusyError,
)
from airflow_control_plane.dagsync.events import RELEASE_PUBLISHED, SYNC_FAILED, EventPublisher
from airflow_control_plane.dagsync.git_source import (
    GitSource,
    ResolvedRef,
    is_full_sha,
    normalise_subdir,
    validate_ref,
)
from airflow_control_plane.dagsync.in_use import ReleasesInUse
from airflow_control_plane.dagsync.lock import DEFAULT_TTL_S, FileLock
from airflow_control_plane.dagsync.publish import (
    LiveRelease,
    prepare_target,
    read_live,
    read_pin,
    switch_current,
    write_pin,
)
from airflow_control_plane.dagsync.release import (
    BuildOptions,
    ReleaseManifest,
    ReleaseMeta,
    build_release,
    manifest_path,
    read_manifest,
    release_id_for,
)
from airflow_control_plane.dagsync.request import SyncRequest
from airflow_control_plane.dagsync.retention import (
    apply_retention,
    clean_leftovers,
    clear_pending_markers,
    decide_retention,
    full_sweep,
    pending,
    scan_releases,
)
from airflow_control_plane.errors import ControlPlaneError, InvalidInputError

# The Lambda's timeout is 300 s: one sync stops by itself well before it (a lease wait included).
DEFAULT_DEADLINE_S = 240.0
DEFAULT_LOCK_TTL_S = DEFAULT_TTL_S


@dataclass(frozen=True)
class SyncSettings:
    repository: str
    ref: str
    target: Path
    subdir: str = ""
    keep_releases: int = 5
    min_release_age_s: float = 3600.0
    lock_ttl_s: float = DEFAULT_LOCK_TTL_S
    lock_wait_s: float = 0.0
    deadline_s: float = DEFAULT_DEADLINE_S
    ignore_syntax: str = "glob"


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
    file_ops: int = 0
    duration_s: float = 0.0
    deleted_releases: tuple[str, ...] = ()
    cleaned_leftovers: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("deleted_releases", "cleaned_leftovers", "skipped", "warnings"):
            data[name] = list(getattr(self, name))
        return data


def sync_once(
    settings: SyncSettings,
    request: SyncRequest,
    source: GitSource,
    publisher: EventPublisher,
    clock: Clock,
    in_use: ReleasesInUse | None = None,
) -> SyncResult:
    """Run one sync. Raises a ControlPlaneError (and announces "DAG sync failed") on failure."""
    started = clock.monotonic()
    try:
        _validate_request(settings, request)
        deadline = Deadline(settings.deadline_s, clock.monotonic)
        source.bind_deadline(deadline)
        prepare_target(settings.target)
        lock = FileLock(
            settings.target, clock.new_id(), settings.lock_ttl_s, clock.now, wait_s=settings.lock_wait_s
        )
        with lock:
            cleaned, interrupted = clean_leftovers(settings.target)
            run = _LockedSync(settings, request, source, clock, lock, deadline, in_use)
            result = run.execute(started, tuple(cleaned), interrupted)
    except SyncBusyError:
        raise  # not a failure of the content: the caller retries
    except Exception as exc:
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


def _validate_request(settings: SyncSettings, request: SyncRequest) -> None:
    validate_ref(settings.ref)
    for name, value in (("sha", request.sha), ("rollback_to", request.rollback_to)):
        if value is not None and not is_full_sha(value):
            raise InvalidInputError(f"{name} must be a full 40-character commit id, got {value!r}")


class _LockedSync:
    """The steps that run while holding the target's lease."""

    def __init__(
        self,
        settings: SyncSettings,
        request: SyncRequest,
        source: GitSource,
        clock: Clock,
        lock: FileLock,
        deadline: Deadline,
        in_use: ReleasesInUse | None,
    ) -> None:
        self.s = settings
        self.request = request
        self.source = source
        self.clock = clock
        self.lock = lock
        self.deadline = deadline
        self.in_use = in_use
        self.subdir = normalise_subdir(settings.subdir)
        self.warnings: list[str] = []
        if lock.took_over:
            self.warnings.append(f"took over the lease of a dead or expired {lock.took_over}")

    def execute(self, started: float, cleaned: tuple[str, ...], interrupted: bool) -> SyncResult:
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
            self._after_crash(interrupted)
            return SyncResult(
                action,
                decision.sha,
                decision.reason,
                duration_s=self.clock.monotonic() - started,
                cleaned_leftovers=cleaned,
                warnings=self._warnings(),
            )
        return self._publish(decision, resolved, live, started, cleaned, interrupted)

    def _warnings(self) -> tuple[str, ...]:
        repairs = getattr(self.source, "repairs", [])
        return tuple(self.warnings) + tuple(f"git cache: {r}" for r in repairs)

    def _after_crash(self, interrupted: bool) -> None:
        """A killed build or deletion may have left folders no release reaches: sweep them."""
        if not interrupted:
            return
        orphans = full_sweep(self.s.target, self.clock.new_id())
        clear_pending_markers(self.s.target)
        if orphans:
            self.warnings.append(f"removed {len(orphans)} folder(s) an interrupted sync left unreachable")

    def _resolve(self, live_sha: str | None) -> tuple[ResolvedRef, Relation]:
        want = self.request.rollback_to or self.request.sha
        rollback = self.request.rollback_to
        if rollback and read_manifest(self.s.target, release_id_for(rollback, self.subdir)):
            # the release is still on the target: roll back without the remote if it is down
            try:
                resolved = self.source.resolve(self.s.ref)
                return ResolvedRef(self.s.ref, resolved.tip_sha, rollback), Relation.UNKNOWN
            except (
                RemoteUnavailableError,
                GitAuthenticationError,
                RefNotFoundError,
                RepositoryNotFoundError,
            ):
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
        interrupted: bool,
    ) -> SyncResult:
        release_id = release_id_for(decision.sha, self.subdir)
        manifest = read_manifest(self.s.target, release_id)
        reused = manifest is not None
        if manifest is None:
            manifest = self._build(decision.sha, live)
        now = self.clock.now()
        os.utime(manifest_path(self.s.target, release_id), (now, now))  # "last became live": retention's age
        nonce = self.clock.new_id()
        self.deadline.check("switching `current`")
        self.lock.verify()
        if self.request.rollback_to:
            write_pin(self.s.target, RollbackPin(decision.sha, resolved.tip_sha), nonce)
        switch_current(self.s.target, release_id, nonce)
        self._after_crash(interrupted)
        deleted = self._retain(release_id, nonce)
        reason = decision.reason + (" (release already on the target: switched only)" if reused else "")
        if manifest.skipped and not reused:
            self.warnings.append(
                f"not published (symlinks and submodules are skipped): {', '.join(manifest.skipped)}"
            )
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
            file_ops=2 if reused else manifest.file_ops + 2,
            duration_s=self.clock.monotonic() - started,
            deleted_releases=deleted,
            cleaned_leftovers=cleaned,
            skipped=() if reused else manifest.skipped,
            warnings=self._warnings(),
        )

    def _build(self, sha: str, live: LiveRelease | None) -> ReleaseManifest:
        root_tree = self.source.root_tree(sha, self.subdir)
        meta = ReleaseMeta(strip_userinfo(self.s.repository), self.s.ref, sha, self.subdir)
        previous_root = live.manifest.root_key if live and live.manifest.root_key else None
        nonce = self.clock.new_id()
        with pending(self.s.target, nonce):
            return build_release(
                self.source,
                root_tree,
                self.s.target,
                meta,
                previous_root,
                now=self.clock.now(),
                nonce=nonce,
                options=BuildOptions(self.s.ignore_syntax),
                deadline=self.deadline,
            )

    def _retain(self, live_id: str, nonce: str) -> tuple[str, ...]:
        in_use: frozenset[str] | None = frozenset()
        problem = ""
        if self.in_use is not None:
            try:
                in_use = self.in_use.release_ids()
            except ControlPlaneError as exc:
                in_use, problem = None, str(exc)
        decision = decide_retention(
            scan_releases(self.s.target, live_id),
            now=self.clock.now(),
            keep_last=self.s.keep_releases,
            min_age_s=self.s.min_release_age_s,
            in_use=in_use,
            in_use_problem=problem,
        )
        if in_use is None:
            self.warnings.append(decision.reason)
        try:
            return apply_retention(self.s.target, decision, live_id=live_id, nonce=nonce)
        except OSError as exc:  # the release is live; retention is retried by the next sync
            self.warnings.append(f"retention incomplete: {exc}")
            return ()
