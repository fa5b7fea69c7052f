"""Build one immutable release from a commit, incrementally from the previous one.

Layout: ``releases/<id>/`` is a real directory holding the commit's top-level files, the
manifest, and one symlink per top-level directory into ``trees/``. ``trees/<key>/`` holds one
directory of the commit (its files, and symlinks ``../<child key>`` for its subdirectories),
keyed by its Git tree id and its path: an unchanged directory keeps its key, so a new release
reuses it with one symlink instead of one operation per file (EFS bills every operation). The
path in the key keeps every directory of a release physically distinct, so Airflow's walk
(which follows symlinks and rejects a directory seen twice) sees a plain tree.

Inside a new directory a file whose blob id and mode equal the previous release's is
hard-linked from it; every other file is written. Every new or changed Python file is
compiled before anything is written, so a broken commit costs no writes and the error names
file and line. Every directory is built under a ``.tmp-`` name and renamed into place only
when complete (children before parents, manifest last), so a directory under a final name is
always complete, whatever instant a crash hits.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from airflow_control_plane.dagsync.errors import ReleaseValidationError
from airflow_control_plane.dagsync.git_source import GitSource, SourceTree, TreeEntry

MANIFEST_NAME = ".release-manifest.json"
TREES = "trees"
TMP_PREFIX = ".tmp-"
MAX_REPORTED_ERRORS = 20


@dataclass(frozen=True)
class ReleaseManifest:
    """What a release holds and how it was built (written into the release as JSON)."""

    release_id: str
    repository: str
    ref: str
    sha: str
    subdir: str
    built_at: float
    files: Mapping[str, Mapping[str, Any]]
    dirs: Mapping[str, str]
    files_written: int
    files_linked: int
    bytes_written: int
    files_removed: int
    dirs_reused: int = 0
    dirs_created: int = 0
    schema: int = 2

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self)}  # shallow: asdict deep-copies
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ReleaseManifest:
        data = json.loads(text)
        data.setdefault("dirs", {})
        return cls(**data)

    def entries(self) -> dict[str, TreeEntry]:
        return {p: TreeEntry(str(v["blob"]), int(v["mode"])) for p, v in self.files.items()}


@dataclass(frozen=True)
class ReleasePlan:
    link: tuple[str, ...]
    write: tuple[str, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True)
class ReleaseMeta:
    repository: str
    ref: str
    sha: str
    subdir: str


@dataclass(frozen=True)
class PreviousRelease:
    path: Path
    manifest: ReleaseManifest
    entries: dict[str, TreeEntry] = field(default_factory=dict)


def release_id_for(sha: str, subdir: str) -> str:
    """``<sha>``, or ``<sha>-<hash of subdir>`` so two subdirectories of one commit never collide."""
    if not subdir:
        return sha
    return f"{sha}-{hashlib.sha256(subdir.encode()).hexdigest()[:8]}"


def plan_release(files: Mapping[str, TreeEntry], previous: Mapping[str, TreeEntry]) -> ReleasePlan:
    """Which files can be linked from the previous release and which must be written."""
    link = tuple(sorted(p for p, e in files.items() if previous.get(p) == e))
    write = tuple(sorted(p for p, e in files.items() if previous.get(p) != e))
    removed = tuple(sorted(p for p in previous if p not in files))
    return ReleasePlan(link, write, removed)


def compile_error(path: str, content: bytes) -> str | None:
    """``path:line: message`` if the Python source does not compile, else None."""
    try:
        compile(content, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return f"{path}:{exc.lineno or 0}: {exc.msg}"
    except ValueError as exc:  # e.g. source with null bytes
        return f"{path}:0: {exc}"
    return None


def validate(contents: Mapping[str, bytes]) -> None:
    """Raise ReleaseValidationError naming every Python file (up to a limit) that fails to compile."""
    errors = [e for p in sorted(contents) if p.endswith(".py") and (e := compile_error(p, contents[p]))]
    if errors:
        shown = "; ".join(errors[:MAX_REPORTED_ERRORS])
        more = f" (and {len(errors) - MAX_REPORTED_ERRORS} more)" if len(errors) > MAX_REPORTED_ERRORS else ""
        raise ReleaseValidationError(f"{len(errors)} file(s) do not compile: {shown}{more}")


def tree_key(tree_id: str, path: str) -> str:
    """The store key of one directory: its content (Git tree id) at its path."""
    return f"{tree_id}-{hashlib.sha256(path.encode()).hexdigest()[:12]}"


def build_release(
    source: GitSource,
    tree: SourceTree,
    releases_dir: Path,
    meta: ReleaseMeta,
    previous: PreviousRelease | None,
    *,
    now: float,
    nonce: str,
) -> ReleaseManifest:
    """Build, validate and place ``releases/<id>/`` (and any new ``trees/<key>/``); return its manifest."""
    files = tree.files
    plan = plan_release(files, previous.entries if previous else {})
    contents = {p: source.read_blob(files[p].blob_id) for p in plan.write}
    validate(contents)
    release_id = release_id_for(meta.sha, meta.subdir)
    keys = {path: tree_key(tree_id, path) for path, tree_id in tree.dirs.items()}
    builder = _Builder(source, releases_dir.parent / TREES, files, contents, previous, nonce)
    for path in sorted(tree.dirs, key=lambda d: d.count("/"), reverse=True):  # children first
        builder.build_tree(path, keys)
    tmp = releases_dir / f"{TMP_PREFIX}{release_id}-{nonce}"
    builder.fill(tmp, "", keys, f"../../{TREES}/")
    manifest = ReleaseManifest(
        release_id=release_id,
        repository=meta.repository,
        ref=meta.ref,
        sha=meta.sha,
        subdir=meta.subdir,
        built_at=now,
        files={p: {"blob": e.blob_id, "mode": e.mode} for p, e in files.items()},
        dirs=keys,
        files_written=builder.written,
        files_linked=builder.linked,
        bytes_written=builder.bytes_written,
        files_removed=len(plan.removed),
        dirs_reused=builder.reused,
        dirs_created=builder.created,
    )
    _write_file(tmp / MANIFEST_NAME, manifest.to_json().encode(), 0o644)
    fsync_dir(tmp)
    os.rename(tmp, releases_dir / release_id)
    fsync_dir(releases_dir)
    return manifest


class _Builder:
    """Writes directories; counts what it wrote, linked and reused."""

    def __init__(
        self,
        source: GitSource,
        trees_dir: Path,
        files: Mapping[str, TreeEntry],
        contents: dict[str, bytes],
        previous: PreviousRelease | None,
        nonce: str,
    ) -> None:
        self.source = source
        self.trees_dir = trees_dir
        self.files = files
        self.contents = contents
        self.previous = previous
        self.nonce = nonce
        self.children = _children(files)
        self.written = self.linked = self.bytes_written = self.reused = self.created = 0

    def build_tree(self, path: str, keys: Mapping[str, str]) -> None:
        final = self.trees_dir / keys[path]
        if final.is_dir():
            self.reused += 1
            return
        self.trees_dir.mkdir(exist_ok=True)
        tmp = self.trees_dir / f"{TMP_PREFIX}{keys[path]}-{self.nonce}"
        self.fill(tmp, path, keys, "../")
        os.rename(tmp, final)
        self.created += 1

    def fill(self, directory: Path, path: str, keys: Mapping[str, str], link_prefix: str) -> None:
        """Create ``directory`` with the files directly under ``path`` and links to its subdirectories."""
        directory.mkdir(parents=True)
        prefix = f"{path}/" if path else ""
        for sub in sorted(d for d in keys if _parent(d) == path):
            os.symlink(f"{link_prefix}{keys[sub]}", directory / sub[len(prefix) :])
        for file_path in self.children.get(path, ()):
            self._place(file_path, directory / file_path[len(prefix) :])
        fsync_dir(directory)

    def _place(self, file_path: str, dest: Path) -> None:
        entry = self.files[file_path]
        data = self.contents.get(file_path)
        if data is None and self.previous is not None and _try_link(self.previous.path / file_path, dest):
            self.linked += 1
            return
        if data is None:  # the previous file is gone or links are not supported: write it
            data = self.source.read_blob(entry.blob_id)
        _write_file(dest, data, entry.mode)
        self.written += 1
        self.bytes_written += len(data)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _children(files: Mapping[str, TreeEntry]) -> dict[str, list[str]]:
    """Files grouped by their directory ("" for the top level)."""
    grouped: dict[str, list[str]] = {}
    for path in sorted(files):
        grouped.setdefault(_parent(path), []).append(path)
    return grouped


def read_manifest(release_dir: Path) -> ReleaseManifest | None:
    try:
        return ReleaseManifest.from_json((release_dir / MANIFEST_NAME).read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _try_link(src: Path, dest: Path) -> bool:
    try:
        os.link(src, dest)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            return False
        raise
    return True


def _write_file(dest: Path, data: bytes, mode: int) -> None:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
