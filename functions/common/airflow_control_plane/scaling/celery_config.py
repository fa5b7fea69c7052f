"""Airflow's Celery configuration plus the control plane's hooks, for workers and scheduler.

Set ``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=airflow_control_plane.scaling.celery_config.CELERY_CONFIG``
in every Airflow container. Importing this module (Airflow does, to build its Celery app)
installs, each only where its environment asks for it:

- worker scale-in protection (:mod:`.protection`): needs ``ECS_AGENT_URI``, which ECS injects;
  its signals (task_prerun, worker_ready) only fire in Celery workers;
- the scheduler's wake-up (:mod:`.wakeup`): needs ``AUTOSCALER_WAKEUP_FUNCTION``.

Locally neither variable is set, so local workers and scheduler run plain Airflow config.
Needs Airflow's Celery provider (runtime image only).
"""

from __future__ import annotations

import importlib
from typing import Any

from airflow_control_plane.scaling.protection import install_celery_hooks
from airflow_control_plane.scaling.wakeup import install_wakeup_hook

_default = importlib.import_module("airflow.providers.celery.executors.default_celery")
CELERY_CONFIG: dict[str, Any] = dict(_default.DEFAULT_CELERY_CONFIG)
PROTECTION_INSTALLED = install_celery_hooks()
WAKEUP_INSTALLED = install_wakeup_hook() is not None
