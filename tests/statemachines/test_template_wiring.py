"""The template's DefinitionSubstitutions cover every ${Placeholder} of each definition.

SAM leaves an unknown ``${Key}`` in the definition as literal text, which only fails at run
time; this reads template.yaml itself so the two cannot drift.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.statemachines

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9]+)\}")


def _state_machines() -> dict[str, dict[str, Any]]:
    template = cfn_yaml.load(str(REPO_ROOT / "template.yaml"))
    return {
        str(props["DefinitionUri"]): props
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Serverless::StateMachine"
        for props in [resource["Properties"]]
    }


@pytest.mark.parametrize("definition", ["statemachines/bringup.asl.json", "statemachines/hibernate.asl.json"])
def test_every_placeholder_is_substituted_by_the_template(definition: str) -> None:
    # GIVEN the state machine resource in template.yaml that uses this definition
    machines = _state_machines()
    assert definition in machines, f"no AWS::Serverless::StateMachine with DefinitionUri {definition}"
    # WHEN its placeholders are compared with the substitutions
    placeholders = set(_PLACEHOLDER.findall((REPO_ROOT / definition).read_text()))
    keys = set(machines[definition]["DefinitionSubstitutions"])
    # THEN none is missing
    assert placeholders - keys == set()
