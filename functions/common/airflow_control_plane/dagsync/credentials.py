"""Git credentials: parsed from a secret, kept out of every log line, event and error.

A secret holds either a bare token (GitHub/GitLab personal access or app token) or JSON
``{"username": ..., "password": ...}`` (CodeCommit HTTPS Git credentials) or
``{"token": ..., "username": ...}``. A bare token authenticates as ``x-access-token``, which
GitHub accepts; GitLab accepts any username with a token (``oauth2`` by convention).

SSH deploy keys are not supported yet (gap): dulwich's SSH transport shells out to an
``ssh`` binary, which the Lambda runtime does not have, and paramiko is not in the locks.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from airflow_control_plane.errors import ConfigError

DEFAULT_TOKEN_USERNAME = "x-access-token"  # noqa: S105 - a username GitHub documents, not a secret


@dataclass(frozen=True)
class GitCredentials:
    username: str
    password: str = field(repr=False)

    def redact(self, text: str) -> str:
        """Replace the secret wherever it appears in ``text``."""
        return redact(text, self)


def redact(text: str, credentials: GitCredentials | None) -> str:
    if credentials is not None and credentials.password:
        text = text.replace(credentials.password, "***")
    return text


def strip_userinfo(url: str) -> str:
    """The URL without any ``user:password@`` part, safe to log and publish."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def parse_secret(secret: str, default_username: str = DEFAULT_TOKEN_USERNAME) -> GitCredentials:
    """Credentials from a secret string; errors never echo the secret."""
    text = secret.strip()
    if not text:
        raise ConfigError("the Git token secret is empty")
    if not text.startswith("{"):
        return GitCredentials(default_username, text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ConfigError("the Git token secret looks like JSON but does not parse") from None
    password = data.get("password") or data.get("token")
    if not isinstance(password, str) or not password:
        raise ConfigError('the Git token secret JSON needs a "password" or "token" string')
    username = data.get("username") or default_username
    if not isinstance(username, str):
        raise ConfigError('the Git token secret JSON "username" must be a string')
    return GitCredentials(username, password)


class EnvironmentSecret:
    """Read a secret from an environment variable (the local runtime and the CLI)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def read(self) -> str:
        value = os.environ.get(self._name)
        if not value:
            raise ConfigError(f"environment variable {self._name} (the Git token) is not set")
        return value
