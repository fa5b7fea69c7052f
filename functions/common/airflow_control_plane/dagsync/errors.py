"""Typed errors of DAG sync, so Step Functions and the CLI can route on the class name."""

from __future__ import annotations

from airflow_control_plane.errors import ConfigError, InvalidInputError, TransientError


class RefNotFoundError(InvalidInputError):
    """The branch, tag or commit does not exist in the repository. Nothing was published."""


class ReleaseValidationError(InvalidInputError):
    """A file of the commit does not compile; the message names file and line. Nothing was published."""


class GitAuthenticationError(ConfigError):
    """The remote rejected the credentials (bad or expired token). Nothing was published."""


class RemoteUnavailableError(TransientError):
    """The Git remote could not be reached or answered with a server error."""


class SyncBusyError(TransientError):
    """Another sync holds the target's lock; retry later."""


class LockLostError(TransientError):
    """The lock expired and was taken over before publishing; this sync published nothing."""


class TargetLayoutError(ConfigError):
    """The target folder is not in a state DAG sync owns (for example `current` is a real directory)."""


class RepositoryNotFoundError(InvalidInputError):
    """The remote answered 404 (or the path holds no repository): permanent, retrying will not help."""


class GitCacheError(TransientError):
    """The local Git cache (not the remote) failed; the message names the cache folder."""


class SyncDeadlineError(TransientError):
    """The sync ran past its overall deadline; nothing was published by it."""
