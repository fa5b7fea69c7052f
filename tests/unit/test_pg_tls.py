"""sslmode -> the TLS context the control plane's pg8000 connections use."""

from __future__ import annotations

import ssl

import pytest

from airflow_control_plane.errors import ConfigError
from airflow_control_plane.metadata_db import connection_kwargs
from airflow_control_plane.pg_tls import ssl_context

pytestmark = pytest.mark.unit


def test_disable_means_plain_tcp() -> None:
    assert ssl_context("disable") is None


def test_require_encrypts_without_verifying_like_libpq() -> None:
    context = ssl_context("require")
    assert context is not None
    assert context.verify_mode == ssl.CERT_NONE
    assert context.check_hostname is False
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_verify_full_checks_certificate_and_host() -> None:
    context = ssl_context("verify-full")
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_unknown_mode_is_a_clear_config_error() -> None:
    with pytest.raises(ConfigError, match="sslmode must be one of disable, require, verify-full"):
        ssl_context("prefer")


def test_the_stacks_database_url_asks_for_tls() -> None:
    # GIVEN the metadata DB URL as the stack stores it (Airflow's URL, sslmode=require)
    kwargs = connection_kwargs("postgresql+psycopg2://airflow:pw@db.internal:5432/airflow?sslmode=require")
    # THEN the autoscaler's pg8000 connection is encrypted
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    # AND a URL without sslmode (the local runtime) stays plain
    assert connection_kwargs("postgresql://postgres@127.0.0.1:5432/airflow")["ssl_context"] is None
