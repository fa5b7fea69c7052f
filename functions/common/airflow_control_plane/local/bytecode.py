"""Is the runtime environment's bytecode compiled?

Every Airflow process runs with ``PYTHONDONTWRITEBYTECODE=1`` (nothing is written next to
the sources or the DAGs). If the virtualenv was installed without bytecode (uv's default),
each process then compiles some 2,500 modules at start: measured here, about 7 s of CPU per
process, several times over during bring-up. ``make venvs`` should compile at install time.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def missing_bytecode_warning() -> str | None:
    """A warning if Airflow's package has no compiled bytecode, else None (also without Airflow)."""
    spec = importlib.util.find_spec("airflow")
    if spec is None or spec.origin is None:
        return None
    cache = Path(spec.origin).parent / "__pycache__"
    if cache.is_dir() and any(cache.glob("*.pyc")):
        return None
    return (
        "the runtime venv has no compiled bytecode, so every Airflow process compiles its modules "
        "at start (slow): rebuild it with bytecode (uv pip sync --compile-bytecode)"
    )
