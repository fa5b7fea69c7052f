"""The Git side of a sync, behind a small port, with a dulwich adapter (no git binary needed).

The adapter keeps a bare, shallow cache repository per remote URL (``/tmp`` on Lambda, a
local folder otherwise), resolves a ref with one ls-remote, fetches only when the commit is
not cached yet, and reads trees and blobs from the cache.

A repository on this machine (``file://`` or a path: the local runtime syncs its own
checkout) is not fetched at all: the cache lists the source's object folder as a Git
*alternate* and reads objects in place, so a new commit costs nothing to bring in (dulwich's
in-process file:// fetch rescans the whole source pack for every fetch).

The cache is disposable and treated as such:

- one process at a time uses it, under an ``flock`` on ``<key>.lock`` beside it (the cache
  is always on a local disk, where the kernel releases the lock with the process, whatever
  killed it), so every ``*.lock`` file found inside it is a leftover of a killed process and
  is removed before use, with half-written packs (a ``.pack`` without its ``.idx``);
- a new cache is initialised under a temporary name and renamed into place, so a cache
  under its final name always has a complete layout;
- any other damage (a corrupt object, a failed local write during a fetch) rebuilds the
  cache once and retries; if that fails too the error is a :class:`GitCacheError` that names
  the cache folder, not the remote.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from dulwich.client import HTTPUnauthorized, default_urllib3_manager, get_transport_and_path
from dulwich.errors import ChecksumMismatch, GitProtocolError, HangupException, NotGitRepository
from dulwich.file import FileLocked
from dulwich.object_store import peel_sha
from dulwich.objects import Blob, Commit, ObjectID, Tree
from dulwich.refs import Ref
from dulwich.repo import Repo

from airflow_control_plane.dagsync.credentials import GitCredentials, redact, strip_userinfo
from airflow_control_plane.dagsync.deadline import Deadline
from airflow_control_plane.dagsync.decision import Relation
from airflow_control_plane.dagsync.errors import (
    GitAuthenticationError,
    GitCacheError,
    RefNotFoundError,
    RemoteUnavailableError,
    RepositoryNotFoundError,
    SyncDeadlineError,
)
from airflow_control_plane.errors import ControlPlaneError, InvalidInputError

# a local head lets the next fetch negotiate from what the cache already holds
FETCHED_HEAD = Ref(b"refs/heads/dagsync-fetched")
SHA_RE = re.compile(r"^[0-9a-f]{40}\Z")
_SAFE_PART = re.compile(r"^[^/\x00]+\Z")
_T = TypeVar("_T")


@dataclass(frozen=True)
class TreeItem:
    """One entry of a Git tree: raw name bytes (may not be UTF-8), mode and object id."""

    name: bytes
    mode: int
    sha: str

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)


@dataclass(frozen=True)
class ResolvedRef:
    """The commit a ref names right now (the ref's tip), and the commit asked for."""

    ref: str
    tip_sha: str
    sha: str


class GitSource(Protocol):
    def bind_deadline(self, deadline: Deadline) -> None: ...

    def resolve(self, ref: str, want_sha: str | None = None) -> ResolvedRef: ...

    def relation(self, live_sha: str, requested_sha: str) -> Relation: ...

    def root_tree(self, sha: str, subdir: str) -> str: ...

    def read_tree(self, tree_id: str) -> list[TreeItem]: ...

    def read_blob(self, blob_id: str) -> bytes: ...

    def close(self) -> None: ...


def is_full_sha(text: str) -> bool:
    return bool(SHA_RE.match(text))


def validate_ref(ref: str) -> str:
    """A ref name must be non-empty and printable: ``''`` never silently means ``main``."""
    if not ref or not ref.strip() or ref != ref.strip() or any(ord(c) < 32 or c == "\x7f" for c in ref):
        raise InvalidInputError(f"ref {ref!r} is not a branch, tag or commit name")
    return ref


def normalise_subdir(subdir: str) -> str:
    parts = [p for p in subdir.strip().strip("/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidInputError(f"subdirectory {subdir!r} must stay inside the repository")
    return "/".join(parts)


def pick_ref(refs: Mapping[bytes, bytes | None], ref: str) -> bytes | None:
    """The advertised object id for ``ref``: branch first, then tag, then a full ref name."""
    candidates = [f"refs/heads/{ref}", f"refs/tags/{ref}", ref]
    for name in candidates:
        value = refs.get(name.encode())
        if value is not None:
            return value
    return None


class _CacheDamaged(Exception):
    """Internal: the local cache (not the remote) failed; rebuild it and retry once."""


class DulwichGitSource:
    """GitSource over dulwich: file://, http(s):// (Basic auth with a token) and local paths."""

    def __init__(
        self,
        url: str,
        cache_root: Path,
        credentials: GitCredentials | None = None,
        *,
        history_depth: int = 50,
        timeout_s: float = 30.0,
    ) -> None:
        self._url = url
        self._display_url = strip_userinfo(url)
        self._credentials = credentials
        self._depth = history_depth
        self._timeout = timeout_s
        key = hashlib.sha256(self._display_url.encode()).hexdigest()[:16]
        self._root = cache_root
        self._cache = cache_root / key
        self._lock_path = cache_root / f"{key}.lock"
        self._local_objects = _local_objects(url)
        self._lock_fd: int | None = None
        self._repo: Repo | None = None
        self._deadline: Deadline | None = None
        self.fetches = 0
        self.repairs: list[str] = []

    @property
    def cache_path(self) -> Path:
        return self._cache

    # -- the port ---------------------------------------------------------------------------
    def bind_deadline(self, deadline: Deadline) -> None:
        self._deadline = deadline

    def resolve(self, ref: str, want_sha: str | None = None) -> ResolvedRef:
        validate_ref(ref)
        if is_full_sha(ref):
            self._guarded(lambda: self._ensure(None, ref))
            return ResolvedRef(ref, ref, want_sha or ref)
        refs = self._ls_remote()
        advertised = pick_ref(refs, ref)
        if advertised is None:
            raise RefNotFoundError(f"ref {ref!r} does not exist in {self._display_url}")
        tip = self._guarded(lambda: self._ensure(advertised.decode(), want_sha))
        return ResolvedRef(ref, tip, want_sha or tip)

    def relation(self, live_sha: str, requested_sha: str) -> Relation:
        """Judged within ``history_depth`` generations of the requested commit, whatever else the
        cache holds, so a warm and a cold cache give the same answer."""
        if live_sha == requested_sha:
            return Relation.SAME
        repo = self._open()
        if _reaches(repo, requested_sha, live_sha, self._depth):
            return Relation.DESCENDANT
        if _reaches(repo, live_sha, requested_sha, self._depth):
            return Relation.ANCESTOR
        return Relation.UNKNOWN

    def root_tree(self, sha: str, subdir: str) -> str:
        repo = self._open()
        commit = self._cached(lambda: repo[sha.encode()])
        if not isinstance(commit, Commit):
            raise RefNotFoundError(f"{sha} is not a commit")
        tree_id = commit.tree
        for part in [p for p in subdir.split("/") if p]:
            tree = self._cached(lambda t=tree_id: repo[t])  # type: ignore[misc]
            assert isinstance(tree, Tree)
            try:
                mode, child = tree[part.encode()]
            except KeyError:
                raise InvalidInputError(f"subdirectory {subdir!r} does not exist at {sha[:12]}") from None
            if not stat.S_ISDIR(mode):
                raise InvalidInputError(f"{subdir!r} is not a directory at {sha[:12]}")
            tree_id = child
        return str(tree_id.decode())

    def read_tree(self, tree_id: str) -> list[TreeItem]:
        tree = self._cached(lambda: self._open()[tree_id.encode()])
        assert isinstance(tree, Tree)
        return [TreeItem(bytes(i.path), int(i.mode), i.sha.decode()) for i in tree.iteritems()]

    def read_blob(self, blob_id: str) -> bytes:
        blob = self._cached(lambda: self._open()[blob_id.encode()])
        assert isinstance(blob, Blob)
        return bytes(blob.as_raw_string())

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # -- the cache ----------------------------------------------------------------------------
    def _take_cache_lock(self) -> None:
        if self._lock_fd is not None:
            return
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise GitCacheError(f"git cache {self._cache} cannot be used: {exc}") from exc
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if self._deadline is not None and self._deadline.expired():
                    os.close(fd)
                    raise GitCacheError(
                        f"git cache {self._cache} is in use by another process past the deadline"
                    ) from None
                time.sleep(0.05)
        self._lock_fd = fd

    def _open(self) -> Repo:
        if self._repo is not None:
            return self._repo
        self._take_cache_lock()
        try:
            self._repair()
            if not (self._cache / "HEAD").is_file():
                self._init()
            self._link_local_objects()
            self._repo = Repo(str(self._cache))
        except (OSError, NotGitRepository, ValueError) as exc:
            self._rebuild(f"cannot open: {type(exc).__name__}: {exc}")
            self._repo = Repo(str(self._cache))
        return self._repo

    def _link_local_objects(self) -> None:
        """For a repository on this machine: read its objects in place (a Git alternate)."""
        if self._local_objects is None:
            return
        alternates = self._cache / "objects" / "info" / "alternates"
        wanted = f"{self._local_objects}\n"
        if alternates.is_file() and alternates.read_text() == wanted:
            return
        alternates.parent.mkdir(parents=True, exist_ok=True)
        tmp = alternates.with_name(f"alternates.tmp-{uuid.uuid4().hex}")
        tmp.write_text(wanted)
        os.replace(tmp, alternates)

    def _init(self) -> None:
        """Initialise under a temporary name, then rename: a half-made cache never has the final name."""
        if self._cache.exists():
            shutil.rmtree(self._cache)
        tmp = self._root / f"{self._cache.name}.init-{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        Repo.init_bare(str(tmp)).close()
        os.rename(tmp, self._cache)

    def _repair(self) -> None:
        """Remove what a killed process left (we hold the flock, so nobody else is writing)."""
        for entry in self._root.glob(f"{self._cache.name}.init-*"):
            shutil.rmtree(entry, ignore_errors=True)
            self.repairs.append(f"removed a half-initialised cache {entry.name}")
        if not self._cache.is_dir():
            return
        if not (self._cache / "HEAD").is_file() or not (self._cache / "objects").is_dir():
            shutil.rmtree(self._cache)
            self.repairs.append("removed a cache without a complete layout")
            return
        for dirpath, _dirs, names in os.walk(self._cache):
            for name in names:
                if name.endswith(".lock") or name.startswith("tmp_") or ".tmp-" in name:
                    os.unlink(os.path.join(dirpath, name))
                    self.repairs.append(
                        f"removed stale {os.path.relpath(os.path.join(dirpath, name), self._cache)}"
                    )
        pack_dir = self._cache / "objects" / "pack"
        if pack_dir.is_dir():
            packs = {p.name for p in pack_dir.iterdir()}
            for name in packs:
                stem, _, ext = name.rpartition(".")
                if (ext == "pack" and f"{stem}.idx" not in packs) or (
                    ext == "idx" and f"{stem}.pack" not in packs
                ):
                    os.unlink(pack_dir / name)
                    self.repairs.append(f"removed incomplete pack file {name}")

    def _rebuild(self, why: str) -> None:
        if self._repo is not None:
            with contextlib.suppress(Exception):
                self._repo.close()
            self._repo = None
        self.repairs.append(f"rebuilt the cache ({why})")
        try:
            if self._cache.exists():
                aside = self._root / f"{self._cache.name}.init-{uuid.uuid4().hex}"
                os.rename(self._cache, aside)
                shutil.rmtree(aside, ignore_errors=True)
            self._init()
        except OSError as exc:
            raise GitCacheError(f"git cache {self._cache} cannot be rebuilt: {exc}") from exc

    def _guarded(self, action: Callable[[], _T]) -> _T:
        """Run a cache operation; on damage rebuild the cache once and retry."""
        try:
            return action()
        except _CacheDamaged as first:
            self._rebuild(str(first))
        try:
            return action()
        except _CacheDamaged as second:
            raise GitCacheError(
                f"git cache {self._cache} is damaged and rebuilding it did not help: {second}"
            ) from None

    def _cached(self, read: Callable[[], _T]) -> _T:
        """Read from the cache; a corrupt object becomes a GitCacheError naming the cache."""
        try:
            return read()
        except (KeyError, ControlPlaneError):
            raise
        except Exception as exc:  # a corrupt object fails in many ways (struct, zlib, checksum, ...)
            self._rebuild(f"{type(exc).__name__}: {exc}")
            raise GitCacheError(
                f"git cache {self._cache} was damaged ({type(exc).__name__}: {exc}); it has been rebuilt "
                "empty and the next sync fetches again"
            ) from exc

    # -- the remote ---------------------------------------------------------------------------
    def _client(self) -> tuple[object, str]:
        creds = self._credentials
        kwargs: dict[str, object] = {}
        if self._url.startswith(("http://", "https://")):
            timeout = self._timeout
            if self._deadline is not None:
                timeout = max(0.5, min(timeout, self._deadline.remaining()))
            kwargs["pool_manager"] = default_urllib3_manager(None, timeout=timeout)
        return get_transport_and_path(
            self._url,
            username=creds.username if creds else None,
            password=creds.password if creds else None,
            **kwargs,  # type: ignore[arg-type]
        )

    def _ls_remote(self) -> dict[bytes, bytes | None]:
        with self._remote_errors():
            client, path = self._client()
            result = client.get_refs(path)  # type: ignore[attr-defined]
            return dict(result.refs)

    def _ensure(self, advertised: str | None, want_sha: str | None) -> str:
        """Make the ref's commit (and ``want_sha``) present in the cache; return the peeled tip."""
        repo = self._open()
        try:
            missing = [s for s in (advertised, want_sha) if s is not None and s.encode() not in repo]
            if missing:
                self._fetch(repo, advertised.encode() if advertised else None)
            tip = advertised
            if advertised is not None and advertised.encode() in repo:
                tip = peel_sha(repo.object_store, ObjectID(advertised.encode()))[1].id.decode()
            absent = [s for s in (tip, want_sha) if s is not None and s.encode() not in repo]
        except (ControlPlaneError, _CacheDamaged):
            raise
        except Exception as exc:  # a corrupt pack or index fails in many ways (struct, zlib, ...)
            raise _CacheDamaged(f"{type(exc).__name__}: {exc}") from exc
        if absent:
            raise RefNotFoundError(
                f"commit {absent[0]} is not within the last {self._depth} commits of the requested ref "
                f"in {self._display_url}"
            )
        assert tip is not None or want_sha is not None
        return tip if tip is not None else str(want_sha)

    def _fetch(self, repo: Repo, want: bytes | None) -> None:
        self.fetches += 1

        def determine_wants(refs: Mapping[bytes, bytes], depth: int | None = None) -> list[bytes]:
            if want is not None:
                return [want]
            head = refs.get(b"HEAD")
            return [head] if head else []

        # An empty cache fetches shallowly; a warm cache fetches what its commits lack (the server
        # negotiates from our heads), so a new commit costs its new objects, not the whole tree.
        depth = None if FETCHED_HEAD in repo.refs else self._depth
        with self._remote_errors():
            client, path = self._client()
            client.fetch(path, repo, determine_wants=determine_wants, depth=depth)  # type: ignore[attr-defined]
        if want is not None and want in repo:
            # a local head lets the next fetch negotiate from here (peeled: heads name commits)
            repo.refs[FETCHED_HEAD] = peel_sha(repo.object_store, ObjectID(want))[1].id

    def _remote_errors(self) -> AbstractContextManager[None]:
        return _remote_errors(self._display_url, self._credentials, self._cache, self._deadline)


def _local_objects(url: str) -> Path | None:
    """The object folder of a repository on this machine, or None for a remote URL."""
    if "://" in url and not url.startswith("file://"):
        return None
    root = Path(url.removeprefix("file://"))
    for candidate in (root / ".git" / "objects", root / "objects"):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def _is_cache_failure(exc: BaseException, cache: Path) -> bool:
    if isinstance(exc, FileLocked | ChecksumMismatch):
        return True
    if isinstance(exc, OSError) and exc.filename is not None:
        return str(exc.filename).startswith(str(cache))
    return False


@contextmanager
def _remote_errors(
    url: str, credentials: GitCredentials | None, cache: Path, deadline: Deadline | None
) -> Iterator[None]:
    """Translate transport failures into typed errors whose text never holds the secret.

    A failure of the local cache during a fetch is not the remote's: it becomes ``_CacheDamaged``
    (rebuilt once). A remote that answers 404 (or a path that holds no repository) is permanent.
    """
    try:
        with deadline.alarm() if deadline is not None else contextlib.nullcontext():
            yield
    except (ControlPlaneError, _CacheDamaged):
        raise
    except HTTPUnauthorized:
        raise GitAuthenticationError(f"{url} rejected the credentials (check the token secret)") from None
    except NotGitRepository as exc:
        detail = redact(str(exc), credentials) or "the server answered 404 Not Found"
        raise RepositoryNotFoundError(
            f"{url} is not a Git repository the credentials can read ({detail}): check the URL "
            "and the token's access; retrying will not help"
        ) from None
    except Exception as exc:
        if _is_cache_failure(exc, cache):
            raise _CacheDamaged(f"{type(exc).__name__}: {exc}") from exc
        transport = isinstance(exc, HangupException | GitProtocolError | OSError)
        if not transport and not type(exc).__module__.startswith(("urllib3", "dulwich")):
            raise
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise GitCacheError(f"git cache {cache}: no space left on the device") from None
        detail = redact(f"{type(exc).__name__}: {exc}", credentials)
        if deadline is not None and deadline.expired():
            raise SyncDeadlineError(f"the sync deadline passed while talking to {url}: {detail}") from None
        raise RemoteUnavailableError(f"cannot fetch from {url}: {detail}") from None


def _reaches(repo: Repo, start: str, target: str, generations: int) -> bool:
    """True if ``target`` is ``start`` or one of its ancestors within ``generations`` parents."""
    if start.encode() not in repo or target.encode() not in repo:
        return False
    shallow = repo.get_shallow()
    frontier = {start.encode()}
    seen: set[bytes] = set()
    goal = target.encode()
    for _ in range(generations + 1):
        if goal in frontier:
            return True
        following: set[bytes] = set()
        for sha in frontier - seen:
            seen.add(sha)
            if sha in shallow or sha not in repo:
                continue
            commit = repo[sha]
            if isinstance(commit, Commit):
                following.update(commit.parents)
        if not following:
            return False
        frontier = following
    return False
