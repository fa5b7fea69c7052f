"""Pure parts of a release: the incremental plan, compile validation, ids, credentials, lock staleness."""

from __future__ import annotations

import pytest

from airflow_control_plane.dagsync.credentials import GitCredentials, parse_secret, redact, strip_userinfo
from airflow_control_plane.dagsync.errors import ReleaseValidationError
from airflow_control_plane.dagsync.git_source import TreeEntry, normalise_subdir, pick_ref
from airflow_control_plane.dagsync.lock import LockRecord, is_stale
from airflow_control_plane.dagsync.release import compile_error, plan_release, release_id_for, validate
from airflow_control_plane.errors import ConfigError, InvalidInputError

pytestmark = pytest.mark.unit


def test_plan_links_unchanged_files_and_writes_only_new_or_changed_ones() -> None:
    # GIVEN a previous release and a commit that changes one file, adds one, removes one, chmods one
    previous = {
        "a.py": TreeEntry("1" * 40, 0o644),
        "b.py": TreeEntry("2" * 40, 0o644),
        "gone.py": TreeEntry("3" * 40, 0o644),
        "run.sh": TreeEntry("4" * 40, 0o644),
    }
    files = {
        "a.py": TreeEntry("1" * 40, 0o644),
        "b.py": TreeEntry("5" * 40, 0o644),
        "new.py": TreeEntry("6" * 40, 0o644),
        "run.sh": TreeEntry("4" * 40, 0o755),
    }
    plan = plan_release(files, previous)
    # THEN only the identical file is linked
    assert plan.link == ("a.py",)
    assert plan.write == ("b.py", "new.py", "run.sh")
    assert plan.removed == ("gone.py",)


def test_compile_errors_name_file_and_line() -> None:
    assert compile_error("dags/ok.py", b"x = 1\n") is None
    error = compile_error("dags/broken.py", b"x = 1\ndef f(:\n    pass\n")
    assert error is not None
    assert error.startswith("dags/broken.py:2:")


def test_validate_reports_every_broken_python_file_and_ignores_other_files() -> None:
    contents = {"a.py": b"def (", "b.py": b"ok = True\n", "c.py": b"  bad indent\n", "notes.txt": b"def ("}
    with pytest.raises(ReleaseValidationError) as info:
        validate(contents)
    message = str(info.value)
    assert "2 file(s) do not compile" in message
    assert "a.py:1:" in message
    assert "c.py:1:" in message
    assert "notes.txt" not in message


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
