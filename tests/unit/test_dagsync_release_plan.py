"""Pure parts of a release: the incremental plan, compile validation, ids, credentials, lock staleness."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from airflow_control_plane.dagsync.credentials import GitCredentials, parse_secret, redact, strip_userinfo
from airflow_control_plane.dagsync.errors import ReleaseValidationError
from airflow_control_plane.dagsync.git_source import TreeItem, normalise_subdir, pick_ref, validate_ref
from airflow_control_plane.dagsync.lock import Identity, LockRecord, holder_is_dead, is_stale
from airflow_control_plane.dagsync.release import (
    ReleaseManifest,
    ReleaseMeta,
    build_release,
    compile_error,
    release_id_for,
    validate,
)
from airflow_control_plane.errors import ConfigError, InvalidInputError

pytestmark = pytest.mark.unit


class FakeSource:
    """An in-memory GitSource: trees built from {path: content}; counts what is opened."""

    def __init__(self) -> None:
        self.trees: dict[str, list[TreeItem]] = {}
        self.blobs: dict[str, bytes] = {}
        self.trees_read: list[str] = []

    def commit(self, files: dict[bytes, bytes], modes: dict[bytes, int] | None = None) -> str:
        """Store the tree of ``files`` (raw byte paths); return the root tree id."""
        return self._tree(b"", {p: c for p, c in files.items()}, modes or {})

    def _tree(self, prefix: bytes, files: dict[bytes, bytes], modes: dict[bytes, int]) -> str:
        items: list[TreeItem] = []
        children: dict[bytes, dict[bytes, bytes]] = {}
        for path, content in files.items():
            head, _, rest = path.partition(b"/")
            if rest:
                children.setdefault(head, {})[rest] = content
                continue
            blob = hashlib.sha256(content).hexdigest()
            self.blobs[blob] = content
            items.append(TreeItem(head, modes.get(prefix + head, 0o100644), blob))
        for name, sub in children.items():
            items.append(TreeItem(name, 0o040000, self._tree(prefix + name + b"/", sub, modes)))
        tree_id = hashlib.sha256(repr(sorted((i.name, i.mode, i.sha) for i in items)).encode()).hexdigest()
        self.trees[tree_id] = items
        return tree_id

    def read_tree(self, tree_id: str) -> list[TreeItem]:
        self.trees_read.append(tree_id)
        return self.trees[tree_id]

    def read_blob(self, blob_id: str) -> bytes:
        return self.blobs[blob_id]


def _build(source: FakeSource, root: str, target: Path, previous: str | None, sha: str) -> ReleaseManifest:
    meta = ReleaseMeta("repo", "main", sha, "")
    return build_release(source, root, target, meta, previous, now=1.0, nonce=sha[:8])  # type: ignore[arg-type]


def _repo(teams: int, per_team: int, changed: int | None = None) -> dict[bytes, bytes]:
    files = {}
    for t in range(teams):
        for i in range(per_team):
            rev = b"2" if (t, i) == (0, changed) else b"1"
            files[f"dags/team_{t:02d}/dag_{i:04d}.py".encode()] = b"REV = " + rev + b"\n"
    return files


def test_a_one_file_change_opens_and_writes_only_its_folders(tmp_path: Path) -> None:
    # GIVEN a published release of 40 folders of 25 files
    source = FakeSource()
    first = _build(source, source.commit(_repo(40, 25)), tmp_path, None, "a" * 40)
    # WHEN one file in one folder changes
    root = source.commit(_repo(40, 25, changed=3))
    source.trees_read.clear()
    second = _build(source, root, tmp_path, first.root_key, "b" * 40)
    # THEN only the changed file's folder and its two ancestors are opened and created
    assert len(source.trees_read) == 3
    assert (second.dirs_created, second.files_written, second.files_linked) == (3, 1, 24)
    # AND the 39 unchanged folders are shared; nothing else is written
    assert second.dirs_reused == 39
    changed = tmp_path / "releases" / ("b" * 40) / "dags" / "team_00" / "dag_0003.py"
    assert changed.read_bytes() == b"REV = 2\n"


def test_file_operations_of_a_change_do_not_grow_with_the_number_of_folders(tmp_path: Path) -> None:
    ops = []
    for teams in (10, 200):
        source = FakeSource()
        target = tmp_path / str(teams)
        first = _build(source, source.commit(_repo(teams, 20)), target, None, "a" * 40)
        second = _build(source, source.commit(_repo(teams, 20, changed=0)), target, first.root_key, "b" * 40)
        ops.append(second.file_ops - second.dirs_reused * 0)
    # the root's folder list grows by one symlink per folder at the top level only ("dags" here)
    assert ops[0] < ops[1] <= ops[0] + 200
    assert ops[1] - ops[0] == 190  # exactly the 190 extra entries of the changed "dags" folder


def test_a_name_that_is_not_utf8_is_refused_clearly_before_any_write(tmp_path: Path) -> None:
    # GIVEN a commit with a folder whose name is Latin-1 bytes
    source = FakeSource()
    root = source.commit({b"dags/caf\xe9/x.py": b"X = 1\n", b"dags/ok.py": b"Y = 1\n"})
    # WHEN it is built THEN a ReleaseValidationError names it readably, and nothing was written
    with pytest.raises(ReleaseValidationError, match=r"caf\\xe9.*not valid UTF-8"):
        _build(source, root, tmp_path, None, "c" * 40)
    assert not (tmp_path / "releases").exists()
    assert not (tmp_path / "trees").exists()


def test_symlinks_are_skipped_and_reported_and_a_root_manifest_name_is_an_ordinary_file(
    tmp_path: Path,
) -> None:
    # GIVEN a repository holding a symlink and a root file named like the old manifest
    source = FakeSource()
    files = {b"link.py": b"../outside.py", b".release-manifest.json": b"{}", b"dag.py": b"X = 1\n"}
    root = source.commit(files, modes={b"link.py": 0o120000})
    manifest = _build(source, root, tmp_path, None, "d" * 40)
    # THEN the symlink is not published but reported, and the repository's file is published as is
    assert manifest.skipped == ("link.py (symlink)",)
    release = tmp_path / "releases" / ("d" * 40)
    assert sorted(p.name for p in release.iterdir()) == [".release-manifest.json", "dag.py"]
    assert (release / ".release-manifest.json").read_bytes() == b"{}"


def test_airflowignored_python_files_are_not_compiled(tmp_path: Path) -> None:
    # GIVEN a Jinja template with a .py name, ignored by .airflowignore, and a broken ignored folder
    source = FakeSource()
    files = {
        b".airflowignore": b"*.j2.py\ntemplates/\n",
        b"dags/query.j2.py": b"SELECT {{ ds }}\n",
        b"templates/t.py": b"{% if x %}\n",
        b"dags/ok.py": b"X = 1\n",
    }
    manifest = _build(source, source.commit(files), tmp_path, None, "e" * 40)
    # THEN the commit is published, ignored files included (a DAG may read them)
    assert manifest.files_written == 4
    # WHEN the ignore rule is removed, the same unchanged files are compiled again and refused
    files[b".airflowignore"] = b"# nothing ignored\n"
    with pytest.raises(ReleaseValidationError, match=r"dags/query\.j2\.py:1:"):
        _build(source, source.commit(files), tmp_path, manifest.root_key, "f" * 40)


def test_compile_errors_name_file_and_line() -> None:
    assert compile_error("dags/ok.py", b"x = 1\n") is None
    error = compile_error("dags/broken.py", b"x = 1\ndef f(:\n    pass\n")
    assert error is not None
    assert error.startswith("dags/broken.py:2:")


def test_validate_reports_every_broken_python_file() -> None:
    contents = {"a.py": b"def (", "b.py": b"ok = True\n", "c.py": b"  bad indent\n"}
    with pytest.raises(ReleaseValidationError) as info:
        validate(contents)
    message = str(info.value)
    assert "2 file(s) do not compile" in message
    assert "a.py:1:" in message
    assert "c.py:1:" in message


def test_release_ids_separate_subdirectories_of_one_commit() -> None:
    sha = "a" * 40
    assert release_id_for(sha, "") == sha
    assert release_id_for(sha, "dags") != release_id_for(sha, "other")
    assert release_id_for(sha, "dags").startswith(sha + "-")


def test_subdir_must_stay_inside_the_repository() -> None:
    assert normalise_subdir("/dags/./team/") == "dags/team"
    with pytest.raises(InvalidInputError):
        normalise_subdir("../etc")


def test_pick_ref_prefers_branch_then_tag() -> None:
    refs: dict[bytes, bytes | None] = {b"refs/heads/v1": b"b", b"refs/tags/v1": b"t", b"refs/tags/only": b"o"}
    assert pick_ref(refs, "v1") == b"b"
    assert pick_ref(refs, "only") == b"o"
    assert pick_ref(refs, "missing") is None


def test_secrets_parse_and_never_show_in_repr_or_redacted_text() -> None:
    # GIVEN a bare token and a CodeCommit-style JSON secret
    bare = parse_secret("ghp_secretvalue\n")
    codecommit = parse_secret('{"username": "dev-at-123", "password": "pw/123+"}')
    # THEN the usernames follow the convention and the secret is hidden
    assert bare == GitCredentials("x-access-token", "ghp_secretvalue")
    assert codecommit.username == "dev-at-123"
    assert "ghp_secretvalue" not in repr(bare)
    assert redact("fatal: token ghp_secretvalue refused", bare) == "fatal: token *** refused"
    assert strip_userinfo("https://user:ghp_x@github.com/o/r.git") == "https://github.com/o/r.git"


@pytest.mark.parametrize("secret", ["", "{not json", '{"username": "u"}'])
def test_bad_secrets_give_errors_without_the_value(secret: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_secret(secret)
    assert secret == "" or secret not in str(info.value)


def test_a_lock_is_stale_only_after_its_expiry() -> None:
    record = LockRecord("owner-1", acquired_at=100.0, expires_at=200.0)
    assert not is_stale(record, now=199.0, file_mtime=100.0, ttl_s=100.0)
    assert is_stale(record, now=201.0, file_mtime=100.0, ttl_s=100.0)
    # an unreadable lock (holder died while writing it) counts by its file's age
    assert not is_stale(None, now=150.0, file_mtime=100.0, ttl_s=100.0)
    assert is_stale(None, now=201.0, file_mtime=100.0, ttl_s=100.0)


@pytest.mark.parametrize("ref", ["", " ", "main\n", " main"])
def test_an_empty_or_blank_ref_is_refused_not_read_as_main(ref: str) -> None:
    with pytest.raises(InvalidInputError, match="is not a branch, tag or commit name"):
        validate_ref(ref)


ME = Identity("host-a", "boot-1", 100, "555")


def _record(host: str, boot: str, pid: int, started: str = "777") -> LockRecord:
    return LockRecord("o", 0.0, 1e12, host, boot, pid, started)


def test_a_holder_is_provably_dead_only_on_the_same_machine_with_its_process_gone() -> None:
    gone = {200}

    def alive(pid: int, started: str) -> bool:
        return pid not in gone

    # a dead pid on this machine: dead, whatever the expiry says
    assert holder_is_dead(_record("host-a", "boot-1", 200), ME, alive)
    # a running pid on this machine: alive
    assert not holder_is_dead(_record("host-a", "boot-1", 300), ME, alive)
    # another machine, or this machine before a reboot: cannot be proven; wait for the expiry
    assert not holder_is_dead(_record("host-b", "boot-1", 200), ME, alive)
    assert not holder_is_dead(_record("host-a", "boot-0", 200), ME, alive)
    # an old lease without a holder identity
    assert not holder_is_dead(LockRecord("o", 0.0, 1e12), ME, alive)
