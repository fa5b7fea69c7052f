"""Airflow's Celery configuration plus the control plane's hooks, for workers and scheduler.

Set ``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=airflow_control_plane.scaling.celery_config.CELERY_CONFIG``
in every Airflow container. Importing this module (Airflow does, to build its Celery app)
installs, each only where its environment asks for it:

- worker scale-in protection (:mod:`.protection`): needs ``ECS_AGENT_URI``, which ECS injects,
  and a broker with Celery remote control; its signals (task_prerun, worker_ready) only fire
  in Celery workers. Only the drain releases a worker's protection, and the drain needs remote
  control: on a broker without it (SQS) a protected worker could never be released, and
  hibernate's lower desired count would not stop it. There workers run unprotected: the
  autoscaler never scales them in, and hibernate stops them once its drain check finds
  nothing running or queued (``PROTECTION_SKIPPED`` says why);
- the scheduler's wake-up (:mod:`.wakeup`): needs ``AUTOSCALER_WAKEUP_FUNCTION``.

Locally neither variable is set, so local workers and scheduler run plain Airflow config.
Needs Airflow's Celery provider (runtime image only).
"""

from __future__ import annotations

import importlib
from typing import Any

from airflow_control_plane.scaling.drain import missing_remote_control
from airflow_control_plane.scaling.protection import install_celery_hooks
from airflow_control_plane.scaling.wakeup import install_wakeup_hook

_default = importlib.import_module("airflow.providers.celery.executors.default_celery")
CELERY_CONFIG: dict[str, Any] = dict(_default.DEFAULT_CELERY_CONFIG)
PROTECTION_SKIPPED = missing_remote_control(
    str(CELERY_CONFIG.get("broker_url") or ""), CELERY_CONFIG.get("broker_transport_options")
)
PROTECTION_INSTALLED = not PROTECTION_SKIPPED and install_celery_hooks()
WAKEUP_INSTALLED = install_wakeup_hook() is not None
