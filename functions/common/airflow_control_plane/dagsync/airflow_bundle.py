"""An Airflow 3 DAG bundle over a DAG sync target: one parse reads one resolved release.

Configure it instead of a plain ``LocalDagBundle`` on ``<target>/current``::

    AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST='[{"name": "dags",
      "classpath": "airflow_control_plane.dagsync.airflow_bundle.ReleaseDagBundle",
      "kwargs": {"target": "/mnt/dags", "refresh_interval": 1}}]'

Why: the dag processor calls ``refresh()``, then ``get_current_version()``, then lists files
under ``path`` and records ``path`` with every file it queues for parsing. ``refresh()``
resolves ``current`` once (one ``readlink`` and one ``stat``, so refreshing every second costs
nothing), so every file of one refresh is read from the same immutable release even if a
sync switches ``current`` meanwhile; the version Airflow stores with the parsed DAGs is the
release id (the commit SHA), and a worker running a task of that DAG version gets that
release's folder, the exact files the DAG was parsed from. Retention never deletes a release
a queued or running DAG run uses (see ``retention``).

This module imports Airflow, so only the Airflow image and the local runtime import it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.dag_processing.bundles.base import BaseDagBundle

from airflow_control_plane.dagsync.publish import CURRENT
from airflow_control_plane.dagsync.release import RELEASES, read_manifest


class ReleaseDagBundle(BaseDagBundle):  # type: ignore[misc]
    """Versioned bundle: version = release id (commit SHA); path = that release's folder."""

    supports_versioning = True

    def __init__(self, *, target: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._target = Path(target)
        self._release_id: str | None = None

    def _resolve_current(self) -> str:
        """One ``readlink``: the release id ``current`` names now (that is all a refresh costs)."""
        link = self._target / CURRENT
        try:
            release_id = Path(os.readlink(link)).name
        except OSError:
            raise FileNotFoundError(f"no published release at {link} (run a DAG sync first)") from None
        if read_manifest(self._target, release_id) is None:
            raise FileNotFoundError(f"{link} names release {release_id}, which is not complete")
        return release_id

    def refresh(self) -> None:
        """Pin the release ``current`` points at now; later switches wait for the next refresh."""
        if self.version is None:
            self._release_id = self._resolve_current()

    @property
    def path(self) -> Path:
        release_id = self.version if self.version is not None else self._release_id
        if release_id is None:
            release_id = self._release_id = self._resolve_current()
        # a release's link never changes, so every file of this parse or task comes from one release
        return self._target / RELEASES / str(release_id)

    def get_current_version(self) -> str:
        if self.version is not None:
            return str(self.version)
        if self._release_id is None:
            self._release_id = self._resolve_current()
        return self._release_id

    def initialize(self) -> None:
        if self.version is not None and read_manifest(self._target, str(self.version)) is None:
            raise FileNotFoundError(
                f"release {self.version} is no longer on {self._target}: retention keeps the releases "
                "of queued and running DAG runs; was the metadata database unreadable for too long?"
            )
        super().initialize()
