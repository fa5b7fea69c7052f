"""The one definition of the bring-up and hibernate step order.

The AWS state machines (statemachines/bringup.asl.json, statemachines/hibernate.asl.json)
and the local runtime (``afctl up`` / ``afctl down``) both follow these sequences. A test
reads the state machines and checks that their step states appear in exactly this order,
so the two cannot drift apart. In the ASL, a state that performs a step carries
``"Comment": "step:<name> ..."``.
"""

from __future__ import annotations

from enum import StrEnum


class BringUpStep(StrEnum):
    VALIDATE_INPUT = "validate_input"
    MIGRATE_DATABASE = "migrate_database"
    CREATE_ADMIN_USER = "create_admin_user"
    START_CORE_SERVICES = "start_core_services"
    WAIT_CORE_SERVICES_STABLE = "wait_core_services_stable"
    HEALTH_GATE = "health_gate"
    START_WORKERS = "start_workers"
    ANNOUNCE_READY = "announce_ready"


class HibernateStep(StrEnum):
    VALIDATE_INPUT = "validate_input"
    STOP_SCHEDULER = "stop_scheduler"
    DRAIN_TASKS = "drain_tasks"
    STOP_WORKERS = "stop_workers"
    STOP_TRIGGERER = "stop_triggerer"
    STOP_DAG_PROCESSOR = "stop_dag_processor"
    STOP_API_SERVER = "stop_api_server"
    ANNOUNCE_HIBERNATED = "announce_hibernated"


BRING_UP_ORDER: tuple[BringUpStep, ...] = tuple(BringUpStep)
HIBERNATE_ORDER: tuple[HibernateStep, ...] = tuple(HibernateStep)

# Core (long-running, non-worker) services in the order bring-up starts them; hibernate
# stops the scheduler first (so nothing new is queued) and the api-server last.
CORE_SERVICES: tuple[str, ...] = ("api-server", "scheduler", "dag-processor", "triggerer")
