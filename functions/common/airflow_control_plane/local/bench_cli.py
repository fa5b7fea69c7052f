"""``make bench-cli``: how long ``afctl --help`` and one ``afctl up`` take, and which step dominates.

``afctl --help`` is timed as a fresh process (median of several runs). ``afctl up`` runs once
in a temporary state folder (its own database and Redis db, as any checkout gets), its
per-step durations are read from its output, then it is taken down and reset. Figures are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_STEP = re.compile(r"^\[\d+/\d+\] (\w+) done in ([\d.]+) s", re.MULTILINE)
_DAGS = re.compile(r"^\[dags\] sync_dags done in ([\d.]+) s", re.MULTILINE)


def _afctl() -> str:
    sibling = Path(sys.executable).parent / "afctl"
    return str(sibling) if sibling.exists() else "afctl"


def time_help(rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run([_afctl(), "--help"], capture_output=True, check=True, timeout=120)
        times.append(time.perf_counter() - started)
    return times


def time_up(env: dict[str, str]) -> tuple[float, list[tuple[str, float]], str]:
    started = time.perf_counter()
    done = subprocess.run([_afctl(), "up"], env=env, capture_output=True, text=True, timeout=900, check=False)
    total = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"afctl up failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    steps = [(name, float(seconds)) for name, seconds in _STEP.findall(done.stdout)]
    dags = _DAGS.search(done.stdout)
    if dags:
        steps.insert(0, ("sync_dags (in validate_input)", float(dags.group(1))))
    return total, steps, done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="afctl --help runs")
    parser.add_argument("--no-up", action="store_true", help="only time afctl --help")
    args = parser.parse_args(argv)
    helps = time_help(args.rounds)
    print(f"afctl --help: median {statistics.median(helps):.3f} s over {len(helps)} runs "
          f"(min {min(helps):.3f}, max {max(helps):.3f})")  # fmt: skip
    if args.no_up:
        return 0
    with tempfile.TemporaryDirectory(prefix="afctl-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AFCTL_"))}
        env["AFCTL_STATE_DIR"] = str(Path(tmp) / ".local")
        try:
            total, steps, _out = time_up(env)
        finally:
            subprocess.run(
                [_afctl(), "down", "--force"], env=env, capture_output=True, timeout=600, check=False
            )
            subprocess.run(
                [_afctl(), "reset", "--yes"], env=env, capture_output=True, timeout=120, check=False
            )
    print(f"afctl up (fresh state folder and database, warm venv): {total:.1f} s in total")
    for name, seconds in steps:
        print(f"  {name:<32} {seconds:>7.1f} s")
    if steps:
        name, seconds = max(steps, key=lambda s: s[1])
        print(f"dominant step: {name} ({seconds:.1f} s, {100 * seconds / total:.0f} % of the total)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
