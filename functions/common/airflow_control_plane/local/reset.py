"""``afctl reset``: what wiping this environment removes (planned, shown, then applied).

Only what is leased to this state folder is dropped: its metadata database (lease row in
``afctl_lease``) and its Redis db (marker ``afctl:lease``); SQS broker queues are named, never
deleted. A database or Redis db another
environment leases, that this one only joined, or that holds no lease, is left alone and
named. The state folder (credentials, keys, logs, DAG releases, embedded servers' data) is
removed last.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from airflow_control_plane.errors import ControlPlaneError
from airflow_control_plane.local import backing, lease
from airflow_control_plane.local.paths import StatePaths
from airflow_control_plane.local.runtime_state import RuntimeState


@dataclass(frozen=True)
class ResetPlan:
    paths: StatePaths
    database: backing.PostgresTarget | None
    redis: backing.RedisTarget | None
    notes: tuple[str, ...]
    embedded_postgres: bool = False
    embedded_redis: bool = False

    @property
    def anything(self) -> bool:
        return self.paths.root.exists()

    def describe(self) -> list[str]:
        if not self.anything:
            return [f"nothing to reset: {self.paths.root} does not exist"]
        lines = ["afctl reset will:"]
        if self.database is not None:
            lines.append(
                f"  drop database {self.database.database} at {self.database.host}:{self.database.port}"
            )
        if self.redis is not None:
            lines.append(f"  flush Redis db {self.redis.db} at {self.redis.host}:{self.redis.port}")
        lines.append(f"  delete the state folder {self.paths.root} (credentials, keys, logs, DAG releases)")
        lines.extend(f"  keep: {note}" for note in self.notes)
        return lines


def plan_reset(paths: StatePaths) -> ResetPlan:
    me = str(paths.root)
    state = RuntimeState.load(paths) if paths.root.is_dir() else RuntimeState()
    notes: list[str] = []
    database = None
    if state.database_url and not state.embedded_postgres:
        target = backing.PostgresTarget.parse(state.database_url)
        try:
            owner, _schema = lease.read_database_lease(target)
        except Exception as exc:
            owner = None
            notes.append(f"database {target.database}: not reachable ({exc})")
        if owner == me:
            database = target
        elif owner is not None:
            notes.append(f"database {target.database}: leased to the environment in {owner}")
        else:
            notes.append(f"database {target.database}: no lease of this state folder")
    redis = None
    if state.redis_url and not state.embedded_redis:
        target_r = backing.RedisTarget.parse(state.redis_url)
        try:
            owner_r = lease.read_redis_lease(target_r)
            claim = lease.read_redis_claim(target_r)
        except Exception as exc:
            owner_r = claim = None
            notes.append(f"Redis db {target_r.db}: not reachable ({exc})")
        # Ours: its marker, or (after `down` let the marker go) the db number's claim.
        if owner_r == me or (owner_r is None and claim == me):
            redis = target_r
        elif owner_r is not None:
            notes.append(f"Redis db {target_r.db}: leased to the environment in {owner_r}")
    if state.broker == "sqs" and state.sqs:
        # No lease marks SQS queues as this environment's (a prefix can be shared on purpose).
        prefix, where = state.sqs.get("queue_name_prefix", ""), state.sqs.get("endpoint_url") or "AWS"
        notes.append(f"SQS queues {prefix}* at {where}: not deleted (delete or purge them yourself)")
    return ResetPlan(paths, database, redis, tuple(notes), state.embedded_postgres, state.embedded_redis)


def apply_reset(plan: ResetPlan) -> list[str]:
    done: list[str] = []
    me = str(plan.paths.root)
    if plan.database is not None:
        admin = plan.database.with_database("postgres").connect()
        try:
            admin.run(f'DROP DATABASE IF EXISTS "{plan.database.database}" WITH (FORCE)')  # validated name
        finally:
            admin.close()
        done.append(f"dropped database {plan.database.database}")
    if plan.redis is not None:
        lease._client(plan.redis).flushdb()
        lease.release_redis_lease(plan.redis, me)
        done.append(f"flushed Redis db {plan.redis.db} and released its claim")
    if plan.embedded_postgres:
        backing.stop_embedded_postgres(plan.paths.root / "pgdata")
    if plan.embedded_redis:
        backing.stop_embedded_redis(plan.paths.run / "redis.pid")
    try:
        shutil.rmtree(plan.paths.root)
    except OSError as exc:
        raise ControlPlaneError(f"could not delete {plan.paths.root}: {exc}") from exc
    done.append(f"deleted {plan.paths.root}")
    return done
