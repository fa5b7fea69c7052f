"""Generated secrets: the keys every Airflow component must share, and the admin credentials.

Generated once per state folder, stored in 0600 files, and reused by every later run, so
each process (api-server, scheduler, workers, ...) sees the same fernet key, API secret key
and JWT secret. The token source is an input so tests can make the values predictable.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from airflow_control_plane.errors import ConfigError
from airflow_control_plane.local.files import read_json, write_json

TokenSource = Callable[[int], bytes]


@dataclass(frozen=True)
class SharedKeys:
    fernet_key: str
    api_secret_key: str
    jwt_secret: str


@dataclass(frozen=True)
class AdminCredentials:
    username: str
    password: str


def new_shared_keys(token: TokenSource = secrets.token_bytes) -> SharedKeys:
    # A Fernet key is 32 random bytes, url-safe base64 encoded (cryptography.fernet's format).
    return SharedKeys(
        fernet_key=base64.urlsafe_b64encode(token(32)).decode(),
        api_secret_key=base64.urlsafe_b64encode(token(32)).decode().rstrip("="),
        jwt_secret=base64.urlsafe_b64encode(token(48)).decode().rstrip("="),
    )


def new_admin_credentials(username: str, token: TokenSource = secrets.token_bytes) -> AdminCredentials:
    return AdminCredentials(username, base64.urlsafe_b64encode(token(18)).decode())


def _load(path: Path, fields: tuple[str, ...]) -> dict[str, str] | None:
    data = read_json(path)
    if data is None:
        return None
    if not isinstance(data, dict) or any(not isinstance(data.get(f), str) or not data[f] for f in fields):
        raise ConfigError(f"{path} is malformed (expected the keys {', '.join(fields)}); fix or remove it")
    return {f: data[f] for f in fields}


def load_or_create_keys(path: Path, token: TokenSource = secrets.token_bytes) -> SharedKeys:
    existing = _load(path, ("fernet_key", "api_secret_key", "jwt_secret"))
    if existing is not None:
        return SharedKeys(**existing)
    keys = new_shared_keys(token)
    write_json(path, asdict(keys))
    return keys


def load_credentials(path: Path) -> AdminCredentials | None:
    existing = _load(path, ("username", "password"))
    return None if existing is None else AdminCredentials(**existing)


def load_or_create_flower_credentials(
    path: Path, token: TokenSource = secrets.token_bytes
) -> AdminCredentials:
    """Flower's basic-auth pair, generated once (no ":" or ",": Flower splits its setting on them)."""
    existing = load_credentials(path)
    if existing is not None:
        return existing
    credentials = AdminCredentials("flower", token(18).hex())
    store_credentials(path, credentials)
    return credentials


def store_credentials(path: Path, credentials: AdminCredentials) -> None:
    write_json(path, asdict(credentials))
