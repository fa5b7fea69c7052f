"""Where the local runtime's DAGs come from, and publishing them with the real DAG sync core.

Decided once per command by a pure function from the environment and the repository's HEAD:

- default, when the repository is a git checkout: DAG sync publishes ``dags/`` of this
  repository (``file://`` of its root) at the current branch into ``<state>/dags``
  (``releases/<sha>`` + ``current``), exactly as the sync Lambda publishes to EFS. Only
  committed DAGs are published: commit, then ``afctl sync`` (or ``afctl up``).
- ``AFCTL_DAG_REPO_URL`` (with ``AFCTL_DAG_REPO_REF`` default ``main``, ``AFCTL_DAG_REPO_SUBDIR``
  default the repository root, ``AFCTL_DAG_REPO_TOKEN_ENV`` naming the variable that holds a
  token): any other repository, same sync. ``AFCTL_DAG_REPO_REF``/``_SUBDIR`` also override the
  branch and ``dags`` of this repository.
- ``AFCTL_DAGS_SOURCE=folder`` (or an explicit ``AFCTL_DAGS_FOLDER`` without ``AFCTL_DAGS_SOURCE``):
  Airflow reads the working-tree folder directly, uncommitted edits included (the fast edit loop);
  no releases, no versions.
- not a git checkout (a tarball) and nothing configured: folder mode, with a printed note.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from airflow_control_plane.dagsync.events import JsonLinesPublisher
from airflow_control_plane.dagsync.local import local_source, system_clock
from airflow_control_plane.dagsync.publish import CURRENT, read_live
from airflow_control_plane.dagsync.request import SyncRequest
from airflow_control_plane.dagsync.service import SyncResult, sync_once
from airflow_control_plane.dagsync.settings import SyncOptions, build_sync_settings
from airflow_control_plane.errors import ConfigError
from airflow_control_plane.local.paths import repo_root

SOURCE_ENV = "AFCTL_DAGS_SOURCE"
FOLDER_ENV = "AFCTL_DAGS_FOLDER"
REPO_URL_ENV = "AFCTL_DAG_REPO_URL"
REPO_REF_ENV = "AFCTL_DAG_REPO_REF"
REPO_SUBDIR_ENV = "AFCTL_DAG_REPO_SUBDIR"
REPO_TOKEN_ENV = "AFCTL_DAG_REPO_TOKEN_ENV"  # noqa: S105 - the name of a variable, not a secret
OWN_REPO_SUBDIR = "dags"
OTHER_REPO_DEFAULT_REF = "main"


class SourceMode(StrEnum):
    GIT = "git"
    FOLDER = "folder"


@dataclass(frozen=True)
class GitHead:
    """The checked-out commit of a repository; ``branch`` is None on a detached HEAD."""

    sha: str
    branch: str | None


@dataclass(frozen=True)
class DagSource:
    mode: SourceMode
    reason: str
    folder: Path  # folder mode: what Airflow reads; git mode: the sync target (releases + current)
    repository: str = ""
    ref: str = ""
    subdir: str = ""
    token_env: str | None = None

    @property
    def airflow_dags_folder(self) -> Path:
        """What ``[core] dags_folder`` points at."""
        return self.folder / CURRENT if self.mode is SourceMode.GIT else self.folder

    @property
    def bundle_target(self) -> Path | None:
        """The DAG sync target Airflow reads through ReleaseDagBundle (None in folder mode)."""
        return self.folder if self.mode is SourceMode.GIT else None


def local_sync_target(state_root: Path) -> Path:
    return state_root / "dags"


def _value(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def decide_dag_source(
    env: Mapping[str, str],
    *,
    repo_root: Path,
    head: GitHead | None,
    default_folder: Path,
    state_root: Path,
) -> DagSource:
    """Pick the DAG source. Pure: the repository's HEAD is read by the caller (``read_git_head``)."""
    mode = _value(env, SOURCE_ENV).lower()
    if mode not in ("", SourceMode.GIT, SourceMode.FOLDER):
        raise ConfigError(f"{SOURCE_ENV} must be 'git' or 'folder', got {env[SOURCE_ENV]!r}")
    url = _value(env, REPO_URL_ENV)
    if mode == SourceMode.FOLDER and url:
        raise ConfigError(f"{SOURCE_ENV}=folder and {REPO_URL_ENV} contradict each other: unset one")
    folder_explicit = bool(_value(env, FOLDER_ENV))
    if mode == SourceMode.FOLDER or (not mode and not url and folder_explicit):
        why = f"{SOURCE_ENV}=folder" if mode else f"{FOLDER_ENV} is set"
        return _folder(default_folder, f"{why}: Airflow reads {default_folder} directly (no releases)")
    target = local_sync_target(state_root)
    token_env = _value(env, REPO_TOKEN_ENV) or None
    if url:
        ref = _value(env, REPO_REF_ENV) or OTHER_REPO_DEFAULT_REF
        subdir = _value(env, REPO_SUBDIR_ENV)
        reason = f"DAG sync publishes {url} at {ref} ({subdir or 'repository root'}) into {target}"
        return DagSource(SourceMode.GIT, reason, target, url, ref, subdir, token_env)
    if head is None:
        if mode == SourceMode.GIT:
            raise ConfigError(
                f"{SOURCE_ENV}=git but {repo_root} has no git commit: "
                f"set {REPO_URL_ENV} or {SOURCE_ENV}=folder"
            )
        return _folder(
            default_folder,
            f"note: {repo_root} is not a git checkout (or has no commit), so DAG sync cannot publish it; "
            f"Airflow reads {default_folder} directly",
        )
    ref = _value(env, REPO_REF_ENV) or head.branch or head.sha
    subdir = _value(env, REPO_SUBDIR_ENV) or OWN_REPO_SUBDIR
    reason = (
        f"DAG sync publishes {subdir}/ of this repository at {ref} into {target} (committed DAGs only; "
        f"{SOURCE_ENV}=folder reads the working tree)"
    )
    return DagSource(SourceMode.GIT, reason, target, repo_root.as_uri(), ref, subdir, token_env)


def select_dag_source(env: Mapping[str, str], *, default_folder: Path, state_root: Path) -> DagSource:
    """``decide_dag_source`` for this repository, its HEAD read now."""
    root = repo_root()
    return decide_dag_source(
        env, repo_root=root, head=read_git_head(root), default_folder=default_folder, state_root=state_root
    )


def _folder(folder: Path, reason: str) -> DagSource:
    return DagSource(SourceMode.FOLDER, reason, folder)


def read_git_head(root: Path) -> GitHead | None:
    """The commit checked out at ``root``, or None when it is not a git checkout or has no commit."""
    from dulwich.errors import NotGitRepository
    from dulwich.refs import Ref
    from dulwich.repo import Repo

    try:
        repo = Repo(str(root))
    except NotGitRepository:
        return None
    try:
        names, sha = repo.refs.follow(Ref(b"HEAD"))
    except KeyError:
        return None
    finally:
        repo.close()
    if sha is None:
        return None
    branch_ref = names[-1].decode() if len(names) > 1 else ""
    branch = branch_ref.removeprefix("refs/heads/") if branch_ref.startswith("refs/heads/") else None
    return GitHead(sha.decode(), branch)


@dataclass(frozen=True)
class FailedSyncDecision:
    """What ``up`` does when the sync failed or was refused: go on with the live release, or stop."""

    proceed: bool
    reason: str


def decide_after_failed_sync(live_release: str | None, problem: str) -> FailedSyncDecision:
    """Nothing destructive: a live release keeps serving; without one there is nothing to run."""
    if live_release is None:
        return FailedSyncDecision(False, f"no release is published yet, so Airflow has no DAGs: {problem}")
    return FailedSyncDecision(True, f"{problem}; Airflow keeps release {live_release[:12]}")


def live_release(source: DagSource) -> str | None:
    live = read_live(source.folder) if source.mode is SourceMode.GIT else None
    return live.release_id if live else None


def publish(
    source: DagSource,
    state_root: Path,
    *,
    trigger: str,
    sha: str | None = None,
    rollback_to: str | None = None,
    keep: int = 5,
    min_age_s: float = 3600.0,
) -> SyncResult:
    """One DAG sync into the local target with the same core as the Lambda (git mode only)."""
    if source.mode is not SourceMode.GIT:
        raise ConfigError(f"the DAG source is a folder ({source.folder}): there is nothing to sync")
    options = SyncOptions(keep_releases=keep, min_release_age_s=min_age_s)
    settings = build_sync_settings(
        source.repository, source.ref, source.folder, subdir=source.subdir, options=options
    )
    git = local_source(source.repository, state_root / "dagsync-cache", source.token_env)
    events = JsonLinesPublisher(state_root / "logs" / "dagsync-events.jsonl")
    request = SyncRequest(trigger=trigger, sha=sha, rollback_to=rollback_to)
    return sync_once(settings, request, git, events, system_clock())


def summarise_sync(result: SyncResult) -> str:
    if result.action != "published":
        return f"{result.action}: {result.reason}"
    return (
        f"published release {result.release_id} ({result.files_written} file(s) written, "
        f"{result.files_linked} linked unchanged): {result.reason}"
    )
