"""TLS for the control plane's PostgreSQL connections (pg8000).

The stack forces SSL on RDS (``rds.force_ssl=1``), so every Lambda that reads the metadata
database must connect over TLS. The modes follow libpq's ``sslmode`` names:

- ``disable``: plain TCP (local PostgreSQL in the local runtime and the tests);
- ``require``: encrypted, server certificate not verified (what Airflow's own
  ``?sslmode=require`` does with psycopg2);
- ``verify-full``: encrypted, certificate and host name verified against the trust store
  (the Lambda runtime's system CAs; the RDS CA bundle is not shipped in the layer yet, so
  this mode needs a certificate the system trusts: a known gap, see README).
"""

from __future__ import annotations

import ssl

from airflow_control_plane.errors import ConfigError

SSL_MODES = ("disable", "require", "verify-full")


def ssl_context(mode: str) -> ssl.SSLContext | None:
    """The ``ssl_context`` argument for ``pg8000.native.Connection`` for an sslmode."""
    if mode == "disable":
        return None
    if mode == "require":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # encryption without verification, as libpq 'require'
        return context
    if mode == "verify-full":
        context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context
    raise ConfigError(f"sslmode must be one of {', '.join(SSL_MODES)}, got {mode!r}")
