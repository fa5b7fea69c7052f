"""Secrets: the one way the control plane reads one, and the metadata database's credentials.

A :class:`SecretReader` returns one secret string. :class:`SecretsManagerSecret` reads it
from AWS Secrets Manager with an injected boto3 client (a failure names the secret, never
its value); :class:`CachedSecret` keeps a read for ``max_age_s`` (the autoscaler reads its
broker and database secrets each minute); :func:`database_credentials` parses the JSON an
RDS-managed secret holds. The local runtime reads its secrets from its state folder
(local/secrets_store.py) or the environment (dagsync/credentials.py EnvironmentSecret).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Protocol

from airflow_control_plane.errors import ConfigError


class SecretReader(Protocol):
    def read(self) -> str: ...


class SecretsManagerSecret:
    """Read one secret string from AWS Secrets Manager with an injected boto3 client."""

    def __init__(self, client: Any, secret_id: str) -> None:
        self._client = client
        self._secret_id = secret_id

    def read(self) -> str:
        try:
            response = self._client.get_secret_value(SecretId=self._secret_id)
        except Exception as exc:  # botocore errors: name the secret, never its value
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
            raise ConfigError(f"cannot read secret {self._secret_id}: {code}") from None
        value = response.get("SecretString")
        if not isinstance(value, str):
            raise ConfigError(f"secret {self._secret_id} has no SecretString")
        return value


class CachedSecret:
    """A reader whose value is kept for ``max_age_s`` (time as an input)."""

    def __init__(
        self, reader: SecretReader, max_age_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._reader = reader
        self._max_age_s = max_age_s
        self._clock = clock
        self._value: str | None = None
        self._read_at = 0.0

    def read(self) -> str:
        now = self._clock()
        if self._value is None or now - self._read_at >= self._max_age_s:
            self._value, self._read_at = self._reader.read(), now
        return self._value


def database_credentials(secret: str, secret_id: str) -> tuple[str, str]:
    """(username, password) from an RDS-style JSON secret; anything else names the secret."""
    try:
        data = json.loads(secret)
        return str(data["username"]), str(data["password"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"secret {secret_id} must hold JSON with username and password") from None
