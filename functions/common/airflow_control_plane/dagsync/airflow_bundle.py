"""An Airflow 3 DAG bundle over a DAG sync target: one parse reads one resolved release.

Configure it instead of a plain ``LocalDagBundle`` on ``<target>/current``::

    AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST='[{"name": "dags",
      "classpath": "airflow_control_plane.dagsync.airflow_bundle.ReleaseDagBundle",
      "kwargs": {"target": "/mnt/dags", "refresh_interval": 10}}]'

Why: the dag processor calls ``refresh()``, then ``get_current_version()``, then lists files
under ``path`` and records ``path`` with every file it queues for parsing. ``refresh()``
resolves ``current`` once, so every file of one refresh is read from the same immutable
``releases/<id>/`` even if a sync switches ``current`` meanwhile; the version Airflow stores
with the parsed DAGs is the release id (the commit SHA), and a worker running a task of that
DAG version gets ``path = releases/<id>/``, the exact files the DAG was parsed from (retention
keeps releases for ``MIN_RELEASE_AGE_SECONDS``, which should exceed the longest task).

This module imports Airflow, so only the Airflow image and the local runtime import it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.dag_processing.bundles.base import BaseDagBundle

from airflow_control_plane.dagsync.publish import CURRENT, RELEASES
from airflow_control_plane.dagsync.release import read_manifest


class ReleaseDagBundle(BaseDagBundle):  # type: ignore[misc]
    """Versioned bundle: version = release id (commit SHA); path = that release's directory."""

    supports_versioning = True

    def __init__(self, *, target: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._target = Path(target)
        self._resolved: Path | None = None

    def _resolve_current(self) -> Path:
        link = self._target / CURRENT
        resolved = Path(os.path.realpath(link))
        if not link.is_symlink() or read_manifest(resolved) is None:
            raise FileNotFoundError(f"no published release at {link} (run a DAG sync first)")
        return resolved

    def refresh(self) -> None:
        """Pin the release ``current`` points at now; later switches wait for the next refresh."""
        if self.version is None:
            self._resolved = self._resolve_current()

    @property
    def path(self) -> Path:
        if self.version is not None:
            return self._target / RELEASES / str(self.version)
        if self._resolved is None:
            self._resolved = self._resolve_current()
        return self._resolved

    def get_current_version(self) -> str:
        return self.path.name

    def initialize(self) -> None:
        if self.version is not None and read_manifest(self.path) is None:
            raise FileNotFoundError(
                f"release {self.version} is no longer on {self._target}: raise MIN_RELEASE_AGE_SECONDS "
                "above the longest task"
            )
        super().initialize()
