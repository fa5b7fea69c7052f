"""The state machines and the local runtime follow one step order (bringup/steps.py).

Every state that performs a step carries ``"Comment": "step:<name> ..."``; reading the
definitions in document order and dropping consecutive repeats (a step may span a call,
a check and a wait) must give exactly BRING_UP_ORDER / HIBERNATE_ORDER. The executed order
is checked too, in test_bringup.py and test_hibernate.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_control_plane.bringup.steps import BRING_UP_ORDER, HIBERNATE_ORDER
from tests.statemachines.conftest import collapse, statemachine_path

pytestmark = pytest.mark.statemachines

MACHINES = [("bringup.asl.json", BRING_UP_ORDER), ("hibernate.asl.json", HIBERNATE_ORDER)]


def _definition(file_name: str) -> dict[str, Any]:
    data = json.loads(statemachine_path(file_name).read_text())
    assert isinstance(data, dict)
    return data


def _all_states(states: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in states.items():
        yield name, state
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor:
            yield from _all_states(processor["States"])
        for branch in state.get("Branches", []):
            yield from _all_states(branch["States"])


@pytest.mark.parametrize(("file_name", "order"), MACHINES)
def test_step_states_appear_in_the_shared_order(file_name: str, order: tuple[Any, ...]) -> None:
    # GIVEN a state machine definition
    states = _definition(file_name)["States"]
    # WHEN its step comments are read in document order
    steps = [
        state["Comment"].removeprefix("step:").split()[0]
        for _, state in _all_states(states)
        if state.get("Comment", "").startswith("step:")
    ]
    # THEN they are exactly the shared order, each step once
    assert collapse(steps) == [step.value for step in order]


@pytest.mark.parametrize(("file_name", "order"), MACHINES)
def test_every_step_name_is_known(file_name: str, order: tuple[Any, ...]) -> None:
    # GIVEN the step comments of a definition
    names = {
        state["Comment"].removeprefix("step:").split()[0]
        for _, state in _all_states(_definition(file_name)["States"])
        if state.get("Comment", "").startswith("step:")
    }
    # THEN each names a step of the order (no typo hides a step from the check above)
    assert names == {step.value for step in order}


@pytest.mark.parametrize("file_name", [m[0] for m in MACHINES])
def test_definition_follows_the_house_rules(file_name: str) -> None:
    # GIVEN a definition
    definition = _definition(file_name)
    text = statemachine_path(file_name).read_text()
    # THEN JSONata is declared once at the top, and no ARN or account is hard-coded
    assert definition["QueryLanguage"] == "JSONata"
    assert 0 < definition["TimeoutSeconds"] <= 6 * 3600
    assert "QueryLanguage" not in json.dumps(definition["States"])
    hard_coded = [
        a for a in re.findall(r"arn:aws:[a-z0-9-]+:[^\"']*", text) if not a.startswith("arn:aws:states:::")
    ]
    assert hard_coded == []
    assert not re.search(r"\b\d{12}\b", text)
    inside_maps = {
        inner
        for _, state in _all_states(definition["States"])
        if state["Type"] == "Map" and any("States.ALL" in c["ErrorEquals"] for c in state.get("Catch", []))
        for inner, _ in _all_states(state["ItemProcessor"]["States"])
    }
    for name, state in _all_states(definition["States"]):
        if state["Type"] != "Task":
            continue
        # AND every Task has a timeout, retries with backoff and full jitter, and a catch
        assert 0 < state["TimeoutSeconds"] <= 3600, name
        assert state.get("Retry"), name
        for retrier in state["Retry"]:
            assert {"IntervalSeconds", "BackoffRate", "MaxAttempts", "MaxDelaySeconds"} <= set(retrier), name
            assert retrier["JitterStrategy"] == "FULL", name
        if name not in inside_maps:  # inside a Map: the Map state's catch covers it
            assert any("States.ALL" in c["ErrorEquals"] for c in state.get("Catch", [])), name


@pytest.mark.parametrize("file_name", [m[0] for m in MACHINES])
def test_every_failure_path_ends_in_the_named_fail_state(file_name: str) -> None:
    # GIVEN a definition
    states = _definition(file_name)["States"]
    fails = [name for name, state in states.items() if state["Type"] == "Fail"]
    # THEN there is one Fail state, reached only through PublishFailure -> NotifyFailure; the
    # one exception is a best-effort step (its comment says so), whose failure goes on along
    # the success path
    assert len(fails) == 1
    assert states["NotifyFailure"]["Next"] == fails[0]
    assert states["PublishFailure"]["Next"] == "NotifyFailure"
    best_effort = []
    for name, state in _all_states(states):
        for catcher in state.get("Catch", []):
            if "best effort" in state.get("Comment", "").lower() and catcher["Next"] in states:
                best_effort.append(name)
                continue
            assert catcher["Next"] in {"PublishFailure", "NotifyFailure", fails[0]}, name
    assert best_effort == (["ReleaseWorkers"] if file_name == "hibernate.asl.json" else [])
