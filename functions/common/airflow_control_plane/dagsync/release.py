"""Build one immutable release from a commit, with work proportional to the change.

Layout of a target::

    releases/<id>          symlink -> ../trees/<root key>   (the release: what Airflow reads)
    releases/<id>.json     the release manifest: commit, root key, what the build wrote (small)
    trees/<key>/           one immutable folder of the repository: its files, and symlinks
                           ``../<child key>`` for its sub-folders
    trees/<key>.json       that folder's entries (names, blob ids, modes, child tree ids)

A folder's key is its Git tree id plus a hash of its path: an unchanged folder keeps its key
and is shared by every release that contains it, whatever its size; a folder under a final
name is complete (built under a ``.tmp-`` name, renamed when done, its ``.json`` written
first). The path in the key keeps every folder of a release physically distinct, so
Airflow's walk (which follows symlinks and rejects a folder seen twice) sees a plain tree.
No manifest lists every file: the metadata lives per folder, so a change writes the
metadata of the folders it changed and nothing else.

A build compares Git tree ids from the root down and only opens folders whose id changed
(the changed file's folder and its ancestors); in a changed folder a file whose blob id
and mode are unchanged is hard-linked from the previous release's folder, every other file
is written. Every new or changed Python file that Airflow would parse (``.airflowignore``
honoured) is compiled before anything is written, so a broken commit costs no writes and
the error names file and line. Names that are not UTF-8 or that could escape the folder
are refused; symlinks and submodules are not published and are reported.
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

from airflow_control_plane.dagsync.airflowignore import IGNORE_FILE, Rule, compile_rules, is_ignored
from airflow_control_plane.dagsync.deadline import Deadline
from airflow_control_plane.dagsync.errors import ReleaseValidationError
from airflow_control_plane.dagsync.git_source import GitSource, TreeItem

TREES = "trees"
RELEASES = "releases"
TMP_PREFIX = ".tmp-"
MANIFEST_SUFFIX = ".json"
LEGACY_MANIFEST_NAME = ".release-manifest.json"  # inside a release folder, before schema 3
MAX_REPORTED = 20
FSYNC_EACH_UP_TO = 256


@dataclass(frozen=True)
class TreeEntry:
    blob_id: str
    mode: int


@dataclass(frozen=True)
class FolderMeta:
    """What one stored folder holds (its ``trees/<key>.json``)."""

    path: str
    files: dict[str, TreeEntry]
    dirs: dict[str, str]  # name -> Git tree id

    def to_json(self) -> bytes:
        data = {
            "path": self.path,
            "files": {n: [e.blob_id, e.mode] for n, e in sorted(self.files.items())},
            "dirs": dict(sorted(self.dirs.items())),
        }
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> FolderMeta:
        data = json.loads(raw)
        files = {str(n): TreeEntry(str(v[0]), int(v[1])) for n, v in data["files"].items()}
        return cls(str(data["path"]), files, {str(n): str(t) for n, t in data["dirs"].items()})


@dataclass(frozen=True)
class ReleaseManifest:
    """A release: which commit, its root folder, and what its build did (``releases/<id>.json``)."""

    release_id: str
    repository: str
    ref: str
    sha: str
    subdir: str
    built_at: float
    root_key: str
    files_written: int = 0
    files_linked: int = 0
    bytes_written: int = 0
    files_removed: int = 0
    dirs_reused: int = 0
    dirs_created: int = 0
    file_ops: int = 0
    skipped: tuple[str, ...] = ()
    schema: int = 3

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["skipped"] = list(self.skipped)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ReleaseManifest:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["skipped"] = tuple(data.get("skipped", ()))
        return cls(**data)


@dataclass(frozen=True)
class ReleaseMeta:
    repository: str
    ref: str
    sha: str
    subdir: str


@dataclass(frozen=True)
class BuildOptions:
    ignore_syntax: str = "glob"


@dataclass
class _Folder:
    """A folder the build must create."""

    path: str
    key: str
    meta: FolderMeta
    old_key: str | None
    children: dict[str, str]  # name -> child key


@dataclass
class _Plan:
    folders: list[_Folder] = field(default_factory=list)  # children before parents
    contents: dict[str, bytes] = field(default_factory=dict)  # path -> content read for checking
    to_check: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reused: int = 0
    removed: int = 0


def release_id_for(sha: str, subdir: str) -> str:
    """``<sha>``, or ``<sha>-<hash of subdir>`` so two subdirectories of one commit never collide."""
    if not subdir:
        return sha
    return f"{sha}-{hashlib.sha256(subdir.encode()).hexdigest()[:8]}"


def tree_key(tree_id: str, path: str) -> str:
    """The store key of one folder: its content (Git tree id) at its path."""
    return f"{tree_id}-{hashlib.sha256(path.encode()).hexdigest()[:12]}"


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
    errors = [e for p in sorted(contents) if (e := compile_error(p, contents[p]))]
    if errors:
        shown = "; ".join(errors[:MAX_REPORTED])
        more = f" (and {len(errors) - MAX_REPORTED} more)" if len(errors) > MAX_REPORTED else ""
        raise ReleaseValidationError(f"{len(errors)} file(s) do not compile: {shown}{more}")


def decode_name(raw: bytes, folder: str) -> str:
    """A tree entry's name as text, or a clear refusal (never a traceback)."""
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        shown = raw.decode("utf-8", "backslashreplace")
        where = f"{folder}/{shown}" if folder else shown
        raise ReleaseValidationError(
            f'the name "{where}" is not valid UTF-8: Airflow records file paths as UTF-8 text, so this '
            "commit cannot be published; rename it"
        ) from None
    if name in ("", ".", "..", ".git") or "/" in name or "\x00" in name:
        raise ReleaseValidationError(
            f"unsafe name {name!r} in folder {folder or '/'!r} of the repository tree"
        )
    return name


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


class _Planner:
    """Walk the new commit's tree from the root, opening only folders whose Git id changed."""

    def __init__(
        self, source: GitSource, trees_dir: Path, options: BuildOptions, deadline: Deadline | None
    ) -> None:
        self.source = source
        self.trees_dir = trees_dir
        self.options = options
        self.deadline = deadline
        self.plan = _Plan()

    def visit(
        self,
        path: str,
        tree_id: str,
        old_key: str | None,
        rules: list[Rule],
        *,
        parsed: bool,
        recheck: bool,
    ) -> str:
        """Plan ``path``; return its key. ``parsed``: Airflow walks it (not ignored);
        ``recheck``: an ``.airflowignore`` above changed, so unchanged files are checked again."""
        if self.deadline is not None:
            self.deadline.check(f"planning folder {path or '/'}")
        key = tree_key(tree_id, path)
        exists = (self.trees_dir / key).is_dir()
        if exists and not recheck:
            self.plan.reused += 1
            return key
        old = read_folder_meta(self.trees_dir, old_key) if old_key and not exists else None
        files, dirs = self._entries(path, tree_id)
        rules, recheck = self._ignore_rules(path, files, old, rules, recheck)
        for name, entry in files.items():
            file_path = _join(path, name)
            changed = not exists and (old is None or old.files.get(name) != entry)
            wanted = name.endswith(".py") and parsed and (changed or recheck)
            if wanted and not is_ignored(file_path, False, rules):
                self.plan.to_check.append(file_path)
                self.plan.contents[file_path] = self.source.read_blob(entry.blob_id)
        children: dict[str, str] = {}
        for name, child_id in dirs.items():
            child_path = _join(path, name)
            child_old = old.dirs.get(name) if old else None
            children[name] = self.visit(
                child_path,
                child_id,
                tree_key(child_old, child_path) if child_old else None,
                rules,
                parsed=parsed and not is_ignored(child_path, True, rules),
                recheck=recheck,
            )
        if exists:
            self.plan.reused += 1
            return key
        if old is not None:
            self.plan.removed += sum(1 for n in old.files if n not in files)
        self.plan.folders.append(_Folder(path, key, FolderMeta(path, files, dirs), old_key, children))
        return key

    def _entries(self, path: str, tree_id: str) -> tuple[dict[str, TreeEntry], dict[str, str]]:
        files: dict[str, TreeEntry] = {}
        dirs: dict[str, str] = {}
        for item in self.source.read_tree(tree_id):
            name = decode_name(item.name, path)
            if item.is_dir:
                dirs[name] = item.sha
            elif item.is_file:
                files[name] = TreeEntry(item.sha, 0o755 if item.mode & 0o100 else 0o644)
            else:
                self.plan.skipped.append(_describe_skipped(_join(path, name), item))
        return files, dirs

    def _ignore_rules(
        self,
        path: str,
        files: dict[str, TreeEntry],
        old: FolderMeta | None,
        rules: list[Rule],
        recheck: bool,
    ) -> tuple[list[Rule], bool]:
        entry = files.get(IGNORE_FILE)
        if old is not None and old.files.get(IGNORE_FILE) != entry:
            recheck = True  # what is ignored below changed: check unchanged files too
        if entry is None:
            return rules, recheck
        text = self.source.read_blob(entry.blob_id).decode("utf-8", "replace")
        return [*rules, *compile_rules(text, path, self.options.ignore_syntax)], recheck


def _describe_skipped(path: str, item: TreeItem) -> str:
    kind = "symlink" if item.is_symlink else "submodule" if item.mode == 0o160000 else f"mode {item.mode:o}"
    return f"{path} ({kind})"


def plan_build(
    source: GitSource,
    root_tree_id: str,
    trees_dir: Path,
    previous_root_key: str | None,
    options: BuildOptions,
    deadline: Deadline | None = None,
) -> tuple[str, _Plan]:
    planner = _Planner(source, trees_dir, options, deadline)
    root_key = planner.visit("", root_tree_id, previous_root_key, [], parsed=True, recheck=False)
    return root_key, planner.plan


def build_release(
    source: GitSource,
    root_tree_id: str,
    target: Path,
    meta: ReleaseMeta,
    previous_root_key: str | None,
    *,
    now: float,
    nonce: str,
    options: BuildOptions | None = None,
    deadline: Deadline | None = None,
) -> ReleaseManifest:
    """Build, validate and place ``releases/<id>`` (and any new ``trees/<key>/``); return its manifest."""
    trees_dir = target / TREES
    root_key, plan = plan_build(
        source, root_tree_id, trees_dir, previous_root_key, options or BuildOptions(), deadline
    )
    validate({p: plan.contents[p] for p in plan.to_check})
    # a few files: fsync each; many (a first sync): one flush at the end is far cheaper
    few = sum(len(f.meta.files) for f in plan.folders) <= FSYNC_EACH_UP_TO
    writer = _Writer(source, trees_dir, plan.contents, nonce, deadline, durable=few)
    for folder in plan.folders:
        writer.build_folder(folder)
    if plan.folders and not few:
        flush_to_disk()
    release_id = release_id_for(meta.sha, meta.subdir)
    manifest = ReleaseManifest(
        release_id=release_id,
        repository=meta.repository,
        ref=meta.ref,
        sha=meta.sha,
        subdir=meta.subdir,
        built_at=now,
        root_key=root_key,
        files_written=writer.written,
        files_linked=writer.linked,
        bytes_written=writer.bytes_written,
        files_removed=plan.removed,
        dirs_reused=plan.reused,
        dirs_created=len(plan.folders),
        file_ops=writer.ops + 4,
        skipped=tuple(plan.skipped[:MAX_REPORTED]),
    )
    place_release(target, manifest, nonce)
    return manifest


def place_release(target: Path, manifest: ReleaseManifest, nonce: str) -> None:
    """Manifest first, then the ``releases/<id>`` link: a release under its name is complete."""
    releases_dir = target / RELEASES
    releases_dir.mkdir(parents=True, exist_ok=True)
    release_id = manifest.release_id
    tmp_manifest = releases_dir / f"{TMP_PREFIX}{release_id}-{nonce}{MANIFEST_SUFFIX}"
    _write_file(tmp_manifest, manifest.to_json().encode(), 0o644, durable=True)
    os.replace(tmp_manifest, releases_dir / f"{release_id}{MANIFEST_SUFFIX}")
    tmp_link = releases_dir / f"{TMP_PREFIX}{release_id}-{nonce}"
    os.symlink(f"../{TREES}/{manifest.root_key}", tmp_link)
    os.replace(tmp_link, releases_dir / release_id)
    fsync_dir(releases_dir)


class _Writer:
    """Creates folders; counts what it wrote, linked, and every file-system operation."""

    def __init__(
        self,
        source: GitSource,
        trees_dir: Path,
        contents: dict[str, bytes],
        nonce: str,
        deadline: Deadline | None,
        *,
        durable: bool,
    ) -> None:
        self.durable = durable
        self.source = source
        self.trees_dir = trees_dir
        self.contents = contents
        self.nonce = nonce
        self.deadline = deadline
        self.written = self.linked = self.bytes_written = self.ops = 0

    def build_folder(self, folder: _Folder) -> None:
        if self.deadline is not None:
            self.deadline.check(f"writing folder {folder.path or '/'}")
        final = self.trees_dir / folder.key
        if final.is_dir():  # built by an earlier, interrupted sync after all
            return
        self.trees_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.trees_dir / f"{TMP_PREFIX}{folder.key}-{self.nonce}"
        tmp.mkdir()
        for name, child_key in folder.children.items():
            os.symlink(f"../{child_key}", tmp / name)
        old_dir = self.trees_dir / folder.old_key if folder.old_key else None
        old = read_folder_meta(self.trees_dir, folder.old_key) if folder.old_key else None
        for name, entry in folder.meta.files.items():
            unchanged = old is not None and old.files.get(name) == entry
            if unchanged and old_dir is not None and _try_link(old_dir / name, tmp / name):
                self.linked += 1
                continue
            path = _join(folder.path, name)
            data = self.contents.get(path)
            if data is None:
                data = self.source.read_blob(entry.blob_id)
            _write_file(tmp / name, data, entry.mode, durable=self.durable)
            self.written += 1
            self.bytes_written += len(data)
        meta_tmp = self.trees_dir / f"{TMP_PREFIX}{folder.key}-{self.nonce}{MANIFEST_SUFFIX}"
        meta_bytes = folder.meta.to_json()
        _write_file(meta_tmp, meta_bytes, 0o644)
        os.replace(meta_tmp, self.trees_dir / f"{folder.key}{MANIFEST_SUFFIX}")
        os.rename(tmp, final)
        self.bytes_written += len(meta_bytes)
        # mkdir, one op per entry, the metadata file and its rename, the folder's rename
        self.ops += 1 + len(folder.children) + len(folder.meta.files) + 2 + 1


def read_folder_meta(trees_dir: Path, key: str) -> FolderMeta | None:
    try:
        return FolderMeta.from_json((trees_dir / f"{key}{MANIFEST_SUFFIX}").read_bytes())
    except (FileNotFoundError, NotADirectoryError, ValueError, KeyError, TypeError):
        return None


def manifest_path(target: Path, release_id: str) -> Path:
    return target / RELEASES / f"{release_id}{MANIFEST_SUFFIX}"


def read_manifest(target: Path, release_id: str) -> ReleaseManifest | None:
    """The manifest of a complete release (its link and its manifest both present), else None."""
    if not os.path.lexists(target / RELEASES / release_id):
        return None
    try:
        return ReleaseManifest.from_json(manifest_path(target, release_id).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError, KeyError, TypeError):
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


def _write_file(dest: Path, data: bytes, mode: int, *, durable: bool = False) -> None:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def flush_to_disk() -> None:
    """One flush for a large build instead of one ``fsync`` per file (half of a first sync's
    time here). A killed process loses nothing either way (its writes are in the page cache);
    this covers a power loss on a local disk. On EFS, ``close`` already commits each file to
    the server (NFS close-to-open)."""
    os.sync()


def folder_keys(trees_dir: Path, root_key: str) -> Any:
    """Every folder key reachable from ``root_key`` (a full walk: only for the rare full sweep)."""
    stack = [root_key]
    while stack:
        key = stack.pop()
        yield key
        meta = read_folder_meta(trees_dir, key)
        if meta is not None:
            stack.extend(tree_key(t, _join(meta.path, n)) for n, t in meta.dirs.items())
