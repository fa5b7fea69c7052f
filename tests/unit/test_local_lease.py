"""Which local environment may use a database, a Redis db and a port (pure decisions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_control_plane.local.decisions import decide_reconfigure
from airflow_control_plane.local.lease import (
    decide_database_lease,
    decide_redis_lease,
    default_database_name,
    redis_db_candidates,
)

pytestmark = pytest.mark.unit


def test_names_differ_per_state_folder_and_stay_plain_identifiers() -> None:
    a = default_database_name(Path("/home/me/airflow-ecs/.local"))
    b = default_database_name(Path("/home/me/airflow-ecs-2/.local"))
    assert a.startswith("airflow_airflow_ecs_")
    assert b.startswith("airflow_airflow_ecs_2_")
    assert a != b
    assert a == default_database_name(Path("/home/me/airflow-ecs/.local"))
    assert len(a) <= 63
    assert a.replace("_", "").isalnum()
    assert sorted(redis_db_candidates(Path("/x/.local"))) == list(range(1, 16))


@pytest.mark.parametrize(
    ("owner", "schema", "mine", "join", "proceed", "claim", "joined"),
    [
        ("/me", True, True, False, True, False, False),  # our own lease
        (None, False, False, False, True, True, False),  # empty database: claim it
        (None, True, True, False, True, True, False),  # migrated from here before leases existed
        (None, True, False, False, False, False, False),  # made elsewhere: refused
        (None, True, False, True, True, True, True),  # made elsewhere, taken over as asked
        ("/other", True, False, False, False, False, False),  # another environment's: refused
        ("/other", True, False, True, True, False, True),  # joined on purpose, lease stays theirs
    ],
)
def test_database_lease_decisions(
    owner: str | None, schema: bool, mine: bool, join: bool, proceed: bool, claim: bool, joined: bool
) -> None:
    decision = decide_database_lease(
        owner=owner, me="/me", database="db", has_airflow_schema=schema, migrated_by_me=mine, join=join
    )
    assert (decision.proceed, decision.claim, decision.joined) == (proceed, claim, joined)
    if not proceed:
        assert "AFCTL_JOIN=1" in decision.reason
        assert "AFCTL_DATABASE_URL" in decision.reason


def test_a_redis_db_of_another_environment_is_refused_unless_joining() -> None:
    refused = decide_redis_lease(owner="/other", me="/me", where="h:1/3", join=False)
    assert not refused.proceed
    assert "/other" in refused.reason
    assert "AFCTL_REDIS_URL" in refused.reason
    assert decide_redis_lease(owner="/other", me="/me", where="h:1/3", join=True).joined
    assert decide_redis_lease(owner=None, me="/me", where="h:1/3", join=False).claim


def test_a_changed_port_is_refused_only_while_running() -> None:
    recorded = {"api_port": 8080, "database_url": "d", "redis_url": "r"}
    wanted = {**recorded, "api_port": 8081}
    refused = decide_reconfigure(recorded, wanted, running=True)
    assert not refused.run
    assert "api_port 8080 -> 8081" in refused.reason
    assert "afctl down" in refused.reason
    assert decide_reconfigure(recorded, wanted, running=False).run
    assert decide_reconfigure(recorded, recorded, running=True).run
    assert decide_reconfigure({}, wanted, running=True).run  # nothing recorded yet


def test_a_configured_url_at_a_closed_port_says_the_variable_points_there() -> None:
    from airflow_control_plane.errors import ConfigError
    from airflow_control_plane.local.backing import choose_postgres

    # GIVEN AFCTL_DATABASE_URL set to a port where nothing answers, the embedded server installed
    # WHEN the database is chosen / THEN no fallback, and the message says the variable is the cause
    with pytest.raises(
        ConfigError, match=r"AFCTL_DATABASE_URL points there.*only when AFCTL_DATABASE_URL is unset"
    ):
        choose_postgres(
            "postgresql://u@127.0.0.1:1/db", reachable=False, embedded_available=True, configured=True
        )
