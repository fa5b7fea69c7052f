"""Validation regexes anchor at the true end of the string: `$` also matches before a trailing
newline, so "abc\\n" passed checks meant for "abc"."""

from __future__ import annotations

import pytest

from airflow_control_plane.bringup.input import parse_bring_up
from airflow_control_plane.dagsync.git_source import is_full_sha
from airflow_control_plane.errors import InvalidInputError
from tests.conftest import function_app

pytestmark = pytest.mark.unit


def _fernet_app():  # type: ignore[no-untyped-def]
    return function_app("fernet_key", "anchors_fernet_app")


def test_a_commit_id_with_a_trailing_newline_is_not_a_sha() -> None:
    assert is_full_sha("a" * 40)
    assert not is_full_sha("a" * 40 + "\n")


def test_a_fernet_key_with_a_trailing_newline_is_not_a_fernet_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    app = _fernet_app()
    key = app.new_fernet_key()
    assert app.is_fernet_key(key)
    assert not app.is_fernet_key(key + "\n")


@pytest.mark.parametrize(
    "admin",
    [{"username": "admin\n"}, {"email": "admin@example.com\n"}, {"username": "ops\n", "email": "a@b.cd"}],
)
def test_bring_up_user_details_with_a_trailing_newline_are_refused(admin: dict[str, str]) -> None:
    # GIVEN the same details without the newline are accepted
    clean = {k: v.rstrip("\n") for k, v in admin.items()}
    assert parse_bring_up({"adminUser": clean}) is not None
    # THEN with it they are refused
    with pytest.raises(InvalidInputError):
        parse_bring_up({"adminUser": admin})
