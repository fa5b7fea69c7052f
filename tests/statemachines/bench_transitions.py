"""Print state transitions per execution (Step Functions Standard bills per transition).

Run: ``.venv-dev/bin/python -m tests.statemachines.bench_transitions``

Executes, in the emulator (sfn_emulator.py), a first bring-up of a hibernated environment,
a repeated bring-up on the running environment, a bring-up whose health gate needs two
retries, and a hibernate with one drain wait; counts the states entered (Map iterations
included) plus retries (AWS bills "each state transition, including retries") and prices
them at $0.025 per 1,000 transitions (us-east-1, re-check).
"""

from __future__ import annotations

import io
import json
import os
import sys
from contextlib import redirect_stdout
from typing import Any

from airflow_control_plane.bringup.drain import ActiveTaskInstances
from tests.statemachines.sfn_emulator import Emulator, Execution, emulated_aws, load_handler_module

PRICE_PER_TRANSITION_USD = 0.025 / 1000
FAST = {"settle": {"pollSeconds": 5, "maxPolls": 3}}


class _Counter:
    def __init__(self, script: list[ActiveTaskInstances]) -> None:
        self.script = script

    def count_active(self) -> ActiveTaskInstances:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]


def _healthy_after(failures: int) -> Any:
    state = {"calls": 0}

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        from airflow_control_plane.health import NotHealthyYet

        state["calls"] += 1
        if state["calls"] <= failures:
            raise NotHealthyYet("not healthy: scheduler is missing")
        return {"healthy": True, "reason": "healthy"}

    return handler


def _row(label: str, execution: Execution) -> dict[str, Any]:
    if execution.status != "SUCCEEDED":
        raise SystemExit(f"{label}: {execution.status} {execution.error} {execution.cause}")
    return {
        "execution": label,
        "states_entered": execution.transitions,
        "retries": execution.retries,
        "transitions": execution.billed_transitions,
        "usd_per_execution": round(execution.billed_transitions * PRICE_PER_TRANSITION_USD, 6),
        "usd_per_month_daily": round(execution.billed_transitions * PRICE_PER_TRANSITION_USD * 30, 5),
    }


def measure(emulator: Emulator) -> list[dict[str, Any]]:
    validate = load_handler_module("bringup_validate")
    drain = load_handler_module("drain_check")
    emulator.register_lambda("bringup-validate", validate.lambda_handler)
    emulator.register_lambda("health-gate", _healthy_after(0))
    bringup = emulator.create_state_machine("bringup.asl.json")
    hibernate = emulator.create_state_machine("hibernate.asl.json")
    rows = [
        _row("bring-up, first (from hibernated)", emulator.run(bringup, {**FAST, "workers": {"minimum": 1}}))
    ]
    rows.append(
        _row(
            "bring-up, repeated (already running)", emulator.run(bringup, {**FAST, "workers": {"minimum": 1}})
        )
    )
    counter = _Counter([ActiveTaskInstances(1, 0), ActiveTaskInstances(0, 0)])
    drain.build_counter = lambda config: counter
    os.environ.setdefault("DB_HOST", "bench")
    os.environ.setdefault("DB_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:bench")
    emulator.register_lambda("drain-check", drain.lambda_handler)
    rows.append(
        _row(
            "hibernate (one drain wait)",
            emulator.run(hibernate, {"drain": {"pollSeconds": 5, "maxPolls": 5}}),
        )
    )
    emulator.register_lambda("health-gate", _healthy_after(2))
    rows.append(
        _row(
            "bring-up after hibernate, health retried twice",
            emulator.run(bringup, {**FAST, "workers": {"minimum": 1}}),
        )
    )
    return rows


def main() -> None:
    captured = io.StringIO()
    with redirect_stdout(captured), emulated_aws() as emulator:  # powertools logs go to stdout
        rows = measure(emulator)
    width = max(len(r["execution"]) for r in rows)
    print(f"{'execution':<{width}}  states  retries  transitions  USD/execution  USD/month (daily)")
    for r in rows:
        print(
            f"{r['execution']:<{width}}  {r['states_entered']:>6}  {r['retries']:>7}  {r['transitions']:>11}"
            f"  {r['usd_per_execution']:>13}  {r['usd_per_month_daily']:>17}"
        )
    if "--json" in sys.argv:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
