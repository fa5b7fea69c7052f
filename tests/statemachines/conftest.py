"""Fixtures for executing the state machines in the emulator (see sfn_emulator.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.statemachines.health_server import HEALTHY, HealthServer, health_server
from tests.statemachines.sfn_emulator import STATEMACHINES, Emulator, emulated_aws, load_handler_module


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A fresh emulated account with the real validate handler behind the validate Lambda."""
    with emulated_aws() as emu:
        emu.register_lambda("bringup-validate", load_handler_module("bringup_validate").lambda_handler)
        yield emu


@pytest.fixture
def api_server(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[HealthServer]:
    """The real health-gate handler behind the Lambda, pointed at a local health endpoint."""
    with health_server(HEALTHY) as server:
        monkeypatch.setenv("API_SERVER_URL", server.url)
        monkeypatch.setenv("HEALTH_HTTP_TIMEOUT_SECONDS", "2")
        emulator.register_lambda("health-gate", load_handler_module("health_gate").lambda_handler)
        yield server


def step_of_states(file_name: str) -> dict[str, str]:
    """State name -> step name, from the ``"Comment": "step:<name> ..."`` convention."""
    states: dict[str, Any] = json.loads((STATEMACHINES / file_name).read_text())["States"]
    steps = {}
    for name, state in states.items():
        comment = state.get("Comment", "")
        if comment.startswith("step:"):
            steps[name] = comment.removeprefix("step:").split()[0]
    return steps


def collapse(sequence: list[str]) -> list[str]:
    """Drop consecutive repeats: a step may span several states (a call, a check, a wait)."""
    out: list[str] = []
    for item in sequence:
        if not out or out[-1] != item:
            out.append(item)
    return out


def executed_steps(file_name: str, entered_states: list[str]) -> list[str]:
    steps = step_of_states(file_name)
    return collapse([steps[name] for name in entered_states if name in steps])


def statemachine_path(file_name: str) -> Path:
    return STATEMACHINES / file_name
