"""``afctl sync``: publish a Git ref's DAGs into a DAGs folder (the manual and local-runtime sync).

Exit codes: 0 published or nothing to do, 3 refused (an older commit without --rollback-to),
2 error (printed as one line naming what to fix).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from airflow_control_plane.dagsync.events import EventPublisher, InMemoryPublisher, JsonLinesPublisher
from airflow_control_plane.dagsync.local import default_cache_dir, local_source, system_clock
from airflow_control_plane.dagsync.service import SyncResult, SyncSettings, sync_once
from airflow_control_plane.dagsync.webhook import SyncRequest

EXIT_REFUSED = 3


def describe(result: SyncResult) -> str:
    lines = [f"{result.action}: {result.reason}"]
    if result.action == "published":
        lines.append(
            f"  release {result.release_id}: {result.files_written} file(s) written "
            f"({result.bytes_written} bytes), {result.files_linked} linked unchanged, "
            f"{result.files_removed} removed; {result.dirs_created} folder(s) created, "
            f"{result.dirs_reused} unchanged folder(s) shared; in {result.duration_s:.3f} s"
        )
    if result.deleted_releases:
        lines.append(f"  retention deleted: {', '.join(r[:12] for r in result.deleted_releases)}")
    if result.cleaned_leftovers:
        lines.append(f"  cleaned leftovers of interrupted syncs: {', '.join(result.cleaned_leftovers)}")
    lines.extend(f"  warning: {w}" for w in result.warnings)
    return "\n".join(lines)


@click.command("sync")
@click.option("--repo", "repo", envvar="DAG_REPO_URL", required=True, help="Git URL (file://, https://).")
@click.option("--ref", envvar="DAG_REPO_REF", default="main", show_default=True, help="Branch, tag or SHA.")
@click.option("--subdir", envvar="DAG_REPO_SUBDIR", default="", help="Publish only this subdirectory.")
@click.option(
    "--target",
    envvar="DAGS_TARGET_DIR",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The DAGs folder root; Airflow reads <target>/current.",
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
@click.option("--keep", "keep", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--min-age", "min_age_s", default=3600.0, show_default=True, type=click.FloatRange(min=0))
@click.option(
    "--events-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append sync events as JSON lines here (the local event bus).",
)
def sync_command(
    repo: str,
    ref: str,
    subdir: str,
    target: Path,
    rollback_to: str | None,
    sha: str | None,
    token_env: str | None,
    cache_dir: Path | None,
    keep: int,
    min_age_s: float,
    events_file: Path | None,
) -> None:
    """Publish the DAGs of REPO at REF into TARGET atomically (releases/<sha> + a `current` symlink).

    Only changed files are written; a commit whose Python files do not compile is not published;
    an older commit is refused unless --rollback-to names it.
    """
    settings = SyncSettings(
        repository=repo,
        ref=ref,
        target=target,
        subdir=subdir,
        keep_releases=keep,
        min_release_age_s=min_age_s,
    )
    source = local_source(repo, cache_dir or default_cache_dir(), token_env)
    publisher: EventPublisher = JsonLinesPublisher(events_file) if events_file else InMemoryPublisher()
    request = SyncRequest(trigger="manual", sha=sha, rollback_to=rollback_to)
    result = sync_once(settings, request, source, publisher, system_clock())
    click.echo(describe(result))
    if result.action == "refused":
        sys.exit(EXIT_REFUSED)


COMMANDS: list[click.Command] = [sync_command]
