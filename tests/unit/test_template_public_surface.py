"""What the internet can reach by default: no plain-HTTP UI without an explicit opt-in, no
open ingress default, and a public webhook that is capped and holds no access to the DAGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.static import rules

pytestmark = pytest.mark.unit

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
OPT_IN = "yes-the-admin-password-crosses-the-network-unencrypted"
CERT = "arn:aws:acm:us-east-1:123456789012:certificate/0f0e0d0c-0b0a-0908-0706-050403020100"


def evaluate(node: Any, params: dict[str, str], conditions: dict[str, Any]) -> Any:
    """A small evaluator for the intrinsics the Rules and Conditions here use."""
    if isinstance(node, dict) and len(node) == 1:
        ((fn, arg),) = node.items()
        if fn == "Ref":
            return params[arg]
        if fn == "Fn::Equals":
            return evaluate(arg[0], params, conditions) == evaluate(arg[1], params, conditions)
        if fn == "Fn::Not":
            return not evaluate(arg[0], params, conditions)
        if fn == "Fn::Or":
            return any(evaluate(a, params, conditions) for a in arg)
        if fn == "Fn::And":
            return all(evaluate(a, params, conditions) for a in arg)
        if fn == "Condition":
            return evaluate(conditions[arg], params, conditions)
        if fn == "Fn::If":
            branch = arg[1] if evaluate({"Condition": arg[0]}, params, conditions) else arg[2]
            return evaluate(branch, params, conditions)
    return node


def params_with(template: dict[str, Any], **values: str) -> dict[str, str]:
    defaults = {k: str(v.get("Default", "")) for k, v in template["Parameters"].items()}
    return {**defaults, **values}


def test_ingress_has_no_default_and_certificate_or_opt_in_is_required(template: dict[str, Any]) -> None:
    # GIVEN the parameters THEN who may reach the UI has no default: the deployer must say
    assert "Default" not in template["Parameters"]["AllowedIngressCidr"]
    assert template["Parameters"]["InsecurePlainHttpUi"]["Default"] == "no"
    (assertion,) = template["Rules"]["HttpsOrExplicitPlainHttp"]["Assertions"]
    conditions = template["Conditions"]
    # WHEN the Rule is evaluated for each combination
    verdicts = {
        (cert, opt): evaluate(
            assertion["Assert"],
            params_with(template, CertificateArn=cert, InsecurePlainHttpUi=opt),
            conditions,
        )
        for cert in ("", CERT)
        for opt in ("no", OPT_IN)
    }
    # THEN only "no certificate and no opt-in" is refused
    assert verdicts == {("", "no"): False, ("", OPT_IN): True, (CERT, "no"): True, (CERT, OPT_IN): True}
    assert "CertificateArn" in assertion["AssertDescription"]


@pytest.mark.parametrize(
    ("cert", "opt_in", "action"),
    [
        (CERT, "no", "redirect"),
        (CERT, OPT_IN, "redirect"),
        ("", OPT_IN, "forward"),
        ("", "no", "fixed-response"),
    ],
)
def test_port_80_forwards_over_plain_http_only_with_the_opt_in(
    template: dict[str, Any], cert: str, opt_in: str, action: str
) -> None:
    listener = template["Resources"]["HttpListener"]["Properties"]
    params = params_with(template, CertificateArn=cert, InsecurePlainHttpUi=opt_in)
    (default,) = listener["DefaultActions"]
    assert evaluate(default, params, template["Conditions"])["Type"] == action


def test_the_public_webhook_is_capped_outside_the_vpc_and_cannot_touch_the_dags(
    template: dict[str, Any],
) -> None:
    function = template["Resources"]["GithubWebhookFunction"]["Properties"]
    # GIVEN the webhook function THEN its concurrency is capped by its own parameter
    assert function["ReservedConcurrentExecutions"] == {
        "Fn::If": ["CapWebhook", {"Ref": "WebhookReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
    }
    assert template["Parameters"]["WebhookReservedConcurrency"]["Default"] >= 1
    # AND only an explicit 0 (accounts too small to reserve any concurrency) lifts the cap
    assert template["Conditions"]["CapWebhook"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "WebhookReservedConcurrency"}, "0"]}]
    }
    # AND it has no VPC, no file system, and its role no EFS action and no writer tag
    assert "VpcConfig" not in function
    assert "FileSystemConfigs" not in function
    role = template["Resources"]["GithubWebhookRole"]["Properties"]
    assert "Tags" not in role
    actions = {
        a for s in rules.role_statements(template, "GithubWebhookRole") for a in rules._as_list(s["Action"])
    }
    assert not {a for a in actions if a.startswith("elasticfilesystem:")}
    assert {"dynamodb:PutItem", "dynamodb:DeleteItem"} <= actions
    # AND its replays go to its own table; the repository check is configured
    env = function["Environment"]["Variables"]
    assert env["DELIVERIES_TABLE"] == {"Ref": "WebhookDeliveriesTable"}
    assert env["GITHUB_REPOSITORY"] == {"Ref": "GitHubRepository"}
    assert env["DAG_REPO_URL"] == {"Ref": "GitRepositoryUrl"}
