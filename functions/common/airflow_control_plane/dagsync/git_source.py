"""The Git side of a sync, behind a small port, with a dulwich adapter (no git binary needed).

The adapter keeps a bare, shallow cache repository per remote URL (``/tmp`` on Lambda, a
local folder otherwise), resolves a ref with one ls-remote, fetches only when the commit is
not cached yet, and reads trees and blobs from the cache.
"""

from __future__ import annotations

import hashlib
import re
import stat
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dulwich.client import HTTPUnauthorized, default_urllib3_manager, get_transport_and_path
from dulwich.errors import GitProtocolError, HangupException, NotGitRepository
from dulwich.object_store import peel_sha
from dulwich.objects import Blob, Commit, ObjectID, Tree
from dulwich.refs import Ref
from dulwich.repo import Repo

from airflow_control_plane.dagsync.credentials import GitCredentials, redact, strip_userinfo
from airflow_control_plane.dagsync.decision import Relation
from airflow_control_plane.dagsync.errors import (
    GitAuthenticationError,
    RefNotFoundError,
    RemoteUnavailableError,
)
from airflow_control_plane.errors import InvalidInputError

# a local head lets the next fetch negotiate from what the cache already holds
FETCHED_HEAD = Ref(b"refs/heads/dagsync-fetched")
SHA_RE = re.compile(r"^[0-9a-f]{40}\Z")
_SAFE_PART = re.compile(r"^[^/\x00]+\Z")


@dataclass(frozen=True)
class TreeEntry:
    blob_id: str
    mode: int


@dataclass(frozen=True)
class SourceTree:
    """A commit's (sub)tree: every regular file, and every directory with its Git tree id."""

    files: dict[str, TreeEntry]
    dirs: dict[str, str]


@dataclass(frozen=True)
class ResolvedRef:
    """The commit a ref names right now (the ref's tip), and the commit asked for."""

    ref: str
    tip_sha: str
    sha: str


class GitSource(Protocol):
    def resolve(self, ref: str, want_sha: str | None = None) -> ResolvedRef: ...

    def relation(self, live_sha: str, requested_sha: str) -> Relation: ...

    def list_files(self, sha: str, subdir: str) -> SourceTree: ...

    def read_blob(self, blob_id: str) -> bytes: ...

    def close(self) -> None: ...


def is_full_sha(text: str) -> bool:
    return bool(SHA_RE.match(text))


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
        self._cache = cache_root / key
        self._repo: Repo | None = None
        self.fetches = 0

    # -- the port ---------------------------------------------------------------------------
    def resolve(self, ref: str, want_sha: str | None = None) -> ResolvedRef:
        if is_full_sha(ref):
            self._ensure(None, ref)
            return ResolvedRef(ref, ref, want_sha or ref)
        refs = self._ls_remote()
        advertised = pick_ref(refs, ref)
        if advertised is None:
            raise RefNotFoundError(f"ref {ref!r} does not exist in {self._display_url}")
        tip = self._ensure(advertised.decode(), want_sha)
        return ResolvedRef(ref, tip, want_sha or tip)

    def relation(self, live_sha: str, requested_sha: str) -> Relation:
        if live_sha == requested_sha:
            return Relation.SAME
        repo = self._open()
        if _reaches(repo, requested_sha, live_sha, self._depth * 4):
            return Relation.DESCENDANT
        if _reaches(repo, live_sha, requested_sha, self._depth * 4):
            return Relation.ANCESTOR
        return Relation.UNKNOWN

    def list_files(self, sha: str, subdir: str) -> SourceTree:
        repo = self._open()
        commit = repo[sha.encode()]
        if not isinstance(commit, Commit):
            raise RefNotFoundError(f"{sha} is not a commit")
        tree = repo[commit.tree]
        for part in [p for p in subdir.split("/") if p]:
            assert isinstance(tree, Tree)
            try:
                mode, child = tree[part.encode()]
            except KeyError:
                raise InvalidInputError(f"subdirectory {subdir!r} does not exist at {sha[:12]}") from None
            if not stat.S_ISDIR(mode):
                raise InvalidInputError(f"{subdir!r} is not a directory at {sha[:12]}")
            tree = repo[child]
        assert isinstance(tree, Tree)
        files: dict[str, TreeEntry] = {}
        dirs: dict[str, str] = {}
        _walk_tree(repo, tree, "", files, dirs)
        return SourceTree(files, dirs)

    def read_blob(self, blob_id: str) -> bytes:
        blob = self._open()[blob_id.encode()]
        assert isinstance(blob, Blob)
        return bytes(blob.as_raw_string())

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    # -- helpers ------------------------------------------------------------------------------
    def _open(self) -> Repo:
        if self._repo is None:
            if not (self._cache / "HEAD").exists():
                self._cache.mkdir(parents=True, exist_ok=True)
                self._repo = Repo.init_bare(str(self._cache))
            else:
                self._repo = Repo(str(self._cache))
        return self._repo

    def _client(self) -> tuple[object, str]:
        creds = self._credentials
        kwargs: dict[str, object] = {}
        if self._url.startswith(("http://", "https://")):
            kwargs["pool_manager"] = default_urllib3_manager(None, timeout=self._timeout)
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
        missing = [s for s in (advertised, want_sha) if s is not None and s.encode() not in repo]
        if missing:
            tip_want = advertised.encode() if advertised else None
            self._fetch(repo, tip_want)
        tip = advertised
        if advertised is not None:
            tip = peel_sha(repo.object_store, ObjectID(advertised.encode()))[1].id.decode()
        for sha in (tip, want_sha):
            if sha is not None and sha.encode() not in repo:
                raise RefNotFoundError(
                    f"commit {sha} is not within the last {self._depth} commits of the requested ref "
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
        depth = None if self._heads(repo) else self._depth
        with self._remote_errors():
            client, path = self._client()
            client.fetch(path, repo, determine_wants=determine_wants, depth=depth)  # type: ignore[attr-defined]
        if want is not None and want in repo:
            # a local head lets the next fetch negotiate from here (peeled: heads name commits)
            repo.refs[FETCHED_HEAD] = peel_sha(repo.object_store, ObjectID(want))[1].id

    @staticmethod
    def _heads(repo: Repo) -> bool:
        return FETCHED_HEAD in repo.refs

    def _remote_errors(self) -> AbstractContextManager[None]:
        return _remote_errors(self._display_url, self._credentials)


@contextmanager
def _remote_errors(url: str, credentials: GitCredentials | None) -> Iterator[None]:
    """Translate transport failures into typed errors whose text never holds the secret."""
    try:
        yield
    except (RefNotFoundError, InvalidInputError):
        raise
    except HTTPUnauthorized:
        raise GitAuthenticationError(f"{url} rejected the credentials (check the token secret)") from None
    except Exception as exc:
        transport = isinstance(exc, NotGitRepository | HangupException | GitProtocolError | OSError)
        if not transport and not type(exc).__module__.startswith(("urllib3", "dulwich")):
            raise
        detail = redact(f"{type(exc).__name__}: {exc}", credentials)
        raise RemoteUnavailableError(f"cannot fetch from {url}: {detail}") from None


def _reaches(repo: Repo, start: str, target: str, limit: int) -> bool:
    """True if ``target`` is ``start`` or one of its ancestors within the cached history."""
    if start.encode() not in repo or target.encode() not in repo:
        return False
    shallow = repo.get_shallow()
    queue: deque[bytes] = deque([start.encode()])
    seen: set[bytes] = set()
    goal = target.encode()
    while queue and len(seen) < limit:
        sha = queue.popleft()
        if sha == goal:
            return True
        if sha in seen or sha in shallow or sha not in repo:
            continue
        seen.add(sha)
        commit = repo[sha]
        if isinstance(commit, Commit):
            queue.extend(commit.parents)
    return False


def _walk_tree(
    repo: Repo, tree: Tree, prefix: str, files: dict[str, TreeEntry], dirs: dict[str, str]
) -> None:
    for item in tree.iteritems():
        name = item.path.decode("utf-8", "surrogateescape")
        if not _SAFE_PART.match(name) or name in (".", "..", ".git"):
            raise InvalidInputError(f"unsafe path {prefix + name!r} in the repository tree")
        path = prefix + name
        if stat.S_ISDIR(item.mode):
            child = repo[item.sha]
            assert isinstance(child, Tree)
            dirs[path] = item.sha.decode()
            _walk_tree(repo, child, path + "/", files, dirs)
        elif stat.S_ISREG(item.mode):
            files[path] = TreeEntry(item.sha.decode(), 0o755 if item.mode & 0o100 else 0o644)
        # symlinks and submodules are not published: a DAGs folder needs neither, and a
        # symlink could point outside the release
