"""``python -m airflow_control_plane.local.autoscaler``: the supervisor's ``autoscaler`` service.

The same command as ``afctl autoscale --local``; only this entry point imports the command,
so the library (this package) and the command (commands/autoscale.py) import one way.
"""

from __future__ import annotations

import sys

from airflow_control_plane.commands.autoscale import autoscale


def main(argv: list[str] | None = None) -> int:
    autoscale.main(args=["--local", *(sys.argv[1:] if argv is None else argv)], prog_name="autoscaler")
    return 0


if __name__ == "__main__":
    sys.exit(main())
