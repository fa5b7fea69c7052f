"""One way to build a sync's settings: the Lambda (DagSyncConfig), `afctl sync` and the local
runtime's publish all go through :func:`build_sync_settings`, with one set of defaults and one
validation, instead of each filling :class:`SyncSettings` by hand."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from airflow_control_plane.dagsync.airflowignore import check_syntax
from airflow_control_plane.dagsync.service import DEFAULT_DEADLINE_S, DEFAULT_LOCK_TTL_S, SyncSettings
from airflow_control_plane.errors import ConfigError

DEFAULT_KEEP_RELEASES = 5
DEFAULT_MIN_RELEASE_AGE_S = 3600.0
# How long the Lambda and `afctl sync` wait for another machine's lease to expire (a renewed
# lease means busy at once); the local runtime's own publish does not wait.
DEFAULT_LEASE_WAIT_S = 65.0


@dataclass(frozen=True)
class SyncOptions:
    """The tunables of a sync, whoever asks for it."""

    keep_releases: int = DEFAULT_KEEP_RELEASES
    min_release_age_s: float = DEFAULT_MIN_RELEASE_AGE_S
    lease_wait_s: float = 0.0
    deadline_s: float = DEFAULT_DEADLINE_S
    ignore_syntax: str = "glob"


def build_sync_settings(
    repository: str, ref: str, target: Path, *, subdir: str = "", options: SyncOptions | None = None
) -> SyncSettings:
    """The settings of one sync of ``repository`` at ``ref`` (``subdir`` only) into ``target``.

    Raises ConfigError on a value no sync can run with (nothing is touched then).
    """
    opts = options or SyncOptions()
    if not repository:
        raise ConfigError("a DAG sync needs a repository URL")
    if opts.keep_releases < 1:
        raise ConfigError(f"keep at least 1 release, got {opts.keep_releases}")
    if opts.min_release_age_s < 0 or opts.lease_wait_s < 0:
        raise ConfigError("the minimum release age and the lease wait cannot be negative")
    if opts.deadline_s <= 0:
        raise ConfigError(f"the sync deadline must be positive, got {opts.deadline_s}")
    return SyncSettings(
        repository=repository,
        ref=ref,
        target=target,
        subdir=subdir,
        keep_releases=opts.keep_releases,
        min_release_age_s=float(opts.min_release_age_s),
        lock_ttl_s=DEFAULT_LOCK_TTL_S,
        lock_wait_s=float(opts.lease_wait_s),
        deadline_s=float(opts.deadline_s),
        ignore_syntax=check_syntax(opts.ignore_syntax),
    )
