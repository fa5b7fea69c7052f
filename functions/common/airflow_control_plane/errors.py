"""Typed errors of the control plane.

Every error the core raises is one of these, so Step Functions ``Retry``/``Catch`` can
route on the error name (Lambda reports the exception class name as the error type)
and the CLI can print a clear message. Nothing is swallowed.
"""

from __future__ import annotations


class ControlPlaneError(Exception):
    """Base class: a failure the control plane understands and can explain."""


class ConfigError(ControlPlaneError):
    """A required setting is missing or malformed (environment variable, config file)."""


class InvalidInputError(ControlPlaneError):
    """An event, request or command-line input is malformed. Nothing was changed."""


class TransientError(ControlPlaneError):
    """A dependency is temporarily unavailable; retrying later may succeed."""
