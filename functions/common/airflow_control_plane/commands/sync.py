"""``afctl sync``: publish a Git ref's DAGs into a DAGs folder (the manual and local-runtime sync).

Exit codes: 0 published or nothing to do, 3 refused (an older commit without --rollback-to, or
a commit that cannot be published: a file that does not compile, a name that is not UTF-8),
2 error (printed as one line naming what to fix). ``--break-lease`` removes the target's
lease by hand (refused while its holder runs on this machine, unless ``--force``).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

import click

from airflow_control_plane.dagsync.errors import ReleaseValidationError
from airflow_control_plane.dagsync.events import EventPublisher, InMemoryPublisher, JsonLinesPublisher
from airflow_control_plane.dagsync.in_use import PostgresReleasesInUse, ReleasesInUse
from airflow_control_plane.dagsync.local import default_cache_dir, local_source, system_clock
from airflow_control_plane.dagsync.lock import break_lease
from airflow_control_plane.dagsync.request import SyncRequest
from airflow_control_plane.dagsync.service import DEFAULT_DEADLINE_S, SyncResult, sync_once
from airflow_control_plane.dagsync.settings import (
    DEFAULT_KEEP_RELEASES,
    DEFAULT_LEASE_WAIT_S,
    DEFAULT_MIN_RELEASE_AGE_S,
    SyncOptions,
    build_sync_settings,
)
from airflow_control_plane.errors import ConfigError, ControlPlaneError
from airflow_control_plane.local.backing import PostgresTarget
from airflow_control_plane.local.dag_source import SourceMode, select_dag_source
from airflow_control_plane.local.paths import StatePaths
from airflow_control_plane.local.settings import LocalSettings
from airflow_control_plane.local.sync_record import record_sync, uncommitted_warning

EXIT_REFUSED = 3


def describe(result: SyncResult) -> str:
    lines = [f"{result.action}: {result.reason}"]
    if result.action == "published":
        lines.append(
            f"  release {result.release_id}: {result.files_written} file(s) written "
            f"({result.bytes_written} bytes), {result.files_linked} linked unchanged, "
            f"{result.files_removed} removed; {result.dirs_created} folder(s) created, "
            f"{result.dirs_reused} unchanged folder(s) shared; {result.file_ops} file operation(s); "
            f"in {result.duration_s:.3f} s"
        )
    if result.deleted_releases:
        lines.append(f"  retention deleted: {', '.join(r[:12] for r in result.deleted_releases)}")
    if result.cleaned_leftovers:
        lines.append(f"  cleaned leftovers of interrupted syncs: {', '.join(result.cleaned_leftovers)}")
    lines.extend(f"  warning: {w}" for w in result.warnings)
    return "\n".join(lines)


@dataclass(frozen=True)
class SyncWhere:
    """What to publish where, after filling what the command line left out."""

    repo: str
    ref: str
    subdir: str
    target: Path
    token_env: str | None
    cache_dir: Path
    events_file: Path | None
    database_url: str | None = None


def resolve_where(
    repo: str | None,
    ref: str | None,
    subdir: str | None,
    target: Path | None,
    token_env: str | None,
    cache_dir: Path | None,
    events_file: Path | None,
) -> SyncWhere:
    """With --target: as given. Without: the local environment's DAG source and target."""
    if ref is not None and not ref.strip():
        raise click.UsageError("--ref must name a branch, tag or commit (it is empty)")
    if target is not None:
        if not repo:
            raise click.UsageError("--repo (or DAG_REPO_URL) is required with --target")
        cache = cache_dir or default_cache_dir()
        return SyncWhere(repo, ref or "main", subdir or "", target, token_env, cache, events_file)
    paths = StatePaths.from_env()
    if not paths.settings.exists():
        raise click.UsageError(
            f"--target is required: there is no local environment at {paths.root} (run `afctl up` first)"
        )
    local = select_dag_source(
        os.environ, default_folder=LocalSettings.from_env().dags_folder, state_root=paths.root
    )
    if local.mode is not SourceMode.GIT:
        raise ConfigError(f"the local environment reads DAGs from a folder: {local.reason}; nothing to sync")
    if repo:  # another repository into the local target
        local = replace(local, repository=repo, ref=ref or "main", subdir=subdir or "")
    else:
        local = replace(local, ref=ref or local.ref, subdir=local.subdir if subdir is None else subdir)
    click.echo(f"local environment {paths.root}: {local.repository} at {local.ref} into {local.folder}")
    from airflow_control_plane.local.runtime_state import RuntimeState

    return SyncWhere(
        local.repository,
        local.ref,
        local.subdir,
        local.folder,
        token_env or local.token_env,
        cache_dir or paths.root / "dagsync-cache",
        events_file or paths.logs / "dagsync-events.jsonl",
        RuntimeState.load(paths).database_url,
    )


@click.command("sync")
@click.option("--repo", "repo", envvar="DAG_REPO_URL", default=None, help="Git URL (file://, https://).")
@click.option("--ref", envvar="DAG_REPO_REF", default=None, help="Branch, tag or SHA (default main).")
@click.option("--subdir", envvar="DAG_REPO_SUBDIR", default=None, help="Publish only this subdirectory.")
@click.option(
    "--target",
    envvar="DAGS_TARGET_DIR",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="The DAGs folder root; Airflow reads <target>/current. Default: the local environment's "
    "(<state>/dags, with its DAG source as the default --repo/--ref/--subdir).",
)
@click.option("--rollback-to", "rollback_to", default=None, help="Publish this older commit on purpose.")
@click.option("--sha", default=None, help="Publish this commit of the ref (as a push would).")
@click.option("--token-env", default=None, help="Name of the environment variable holding the Git token.")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Git object cache (default ~/.cache/afctl/dagsync).",
)
@click.option("--keep", "keep", default=DEFAULT_KEEP_RELEASES, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--min-age",
    "min_age_s",
    default=DEFAULT_MIN_RELEASE_AGE_S,
    show_default=True,
    type=click.FloatRange(min=0),
)
@click.option(
    "--database-url",
    envvar="DAGSYNC_DATABASE_URL",
    default=None,
    help="Airflow's metadata database (postgresql://...): releases of queued or running DAG runs are "
    "never deleted. Default: the local environment's; with --target and no URL, retention goes by "
    "count and age only.",
)
@click.option(
    "--ignore-syntax",
    envvar="AIRFLOW__CORE__DAG_IGNORE_FILE_SYNTAX",
    default="glob",
    show_default=True,
    type=click.Choice(["glob", "regexp"]),
    help="Airflow's [core] dag_ignore_file_syntax: .airflowignore'd files are not compiled.",
)
@click.option(
    "--deadline", "deadline_s", default=DEFAULT_DEADLINE_S, show_default=True, type=click.FloatRange(min=1)
)
@click.option(
    "--lease-wait",
    "lease_wait_s",
    default=DEFAULT_LEASE_WAIT_S,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Wait this long for another machine's lease to expire (a renewed lease means busy at once).",
)
@click.option("--break-lease", is_flag=True, help="Remove the target's lease by hand, then stop.")
@click.option("--force", is_flag=True, help="With --break-lease: even if its holder runs on this machine.")
@click.option(
    "--events-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append sync events as JSON lines here (the local event bus).",
)
def sync_command(
    repo: str | None,
    ref: str | None,
    subdir: str | None,
    target: Path | None,
    rollback_to: str | None,
    sha: str | None,
    token_env: str | None,
    cache_dir: Path | None,
    keep: int,
    min_age_s: float,
    database_url: str | None,
    ignore_syntax: str,
    deadline_s: float,
    lease_wait_s: float,
    break_lease: bool,
    force: bool,
    events_file: Path | None,
) -> None:
    """Publish the DAGs of REPO at REF into TARGET atomically (releases/<sha> + a `current` symlink).

    Only changed files are written; a commit whose Python files do not compile is not published;
    an older commit is refused unless --rollback-to names it.
    """
    if break_lease:
        folder = target or resolve_where(None, None, None, None, None, None, None).target
        _break_lease(folder, force)
        return
    where = resolve_where(repo, ref, subdir, target, token_env, cache_dir, events_file)
    options = SyncOptions(keep, min_age_s, lease_wait_s, deadline_s, ignore_syntax)
    settings = build_sync_settings(where.repo, where.ref, where.target, subdir=where.subdir, options=options)
    source = local_source(where.repo, where.cache_dir, where.token_env)
    publisher: EventPublisher = (
        JsonLinesPublisher(where.events_file) if where.events_file else InMemoryPublisher()
    )
    request = SyncRequest(trigger="manual", sha=sha, rollback_to=rollback_to)
    in_use = _in_use(database_url or where.database_url)
    local = StatePaths.from_env() if target is None else None
    if local is not None:
        pending = uncommitted_warning(where.repo, where.subdir)
        if pending:
            click.secho(f"warning: {pending}", fg="yellow", err=True)
    created_root = _first_missing(where.target)
    terminate_on_sigterm()
    try:
        result = sync_once(settings, request, source, publisher, system_clock(), in_use)
    except ControlPlaneError as exc:
        if created_root is not None:
            _remove_if_only_folders(created_root)  # a failed sync leaves no empty target behind
        refused = isinstance(exc, ReleaseValidationError)
        if local is not None:
            action = "refused" if refused else "failed"
            record_sync(local, action=action, reason=str(exc), sha=None, trigger="manual")
        if refused:
            click.echo(f"refused: {exc}")
            sys.exit(EXIT_REFUSED)
        raise
    if local is not None:
        record_sync(local, action=result.action, reason=result.reason, sha=result.sha, trigger="manual")
    click.echo(describe(result))
    if result.action == "refused":
        sys.exit(EXIT_REFUSED)


def _in_use(database_url: str | None) -> ReleasesInUse | None:
    if not database_url:
        return None
    return PostgresReleasesInUse(PostgresTarget.parse(database_url).connect)


def terminate_on_sigterm() -> None:
    """SIGTERM (a container stop, ``timeout``) unwinds like an error: the lease is released."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def _break_lease(target: Path, force: bool) -> None:
    result = break_lease(target, now=time.time(), force=force)
    click.echo(result.reason)
    if not result.broken and "running on this machine" in result.reason:
        sys.exit(EXIT_REFUSED)


def _first_missing(target: Path) -> Path | None:
    """The outermost folder of ``target``'s path that does not exist yet (None: it exists)."""
    missing = None
    for folder in (target.absolute(), *target.absolute().parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _remove_if_only_folders(target: Path) -> None:
    """Remove ``target`` if the failed sync created nothing in it but folders (and its lock)."""
    if not target.is_dir():
        return
    for _dirpath, _dirnames, filenames in os.walk(target):
        if any(name != ".dagsync.lock" for name in filenames):
            return
    shutil.rmtree(target, ignore_errors=True)


COMMANDS: list[click.Command] = [sync_command]
