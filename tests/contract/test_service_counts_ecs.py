"""The ServiceCounts ECS adapter against moto: desired counts of existing services only."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from airflow_control_plane.service_counts import EcsServiceObserver
from tests.contract.ecs_task_protection import create_cluster

pytestmark = pytest.mark.contract

CLUSTER = "airflow-test"
REGION = "us-east-1"


@pytest.fixture
def ecs(moto_aws: None) -> Any:
    client = boto3.client("ecs", region_name=REGION)
    create_cluster(client, CLUSTER, family="airflow", fargate=False)
    return client


def test_reads_existing_services_in_batches_of_ten_and_skips_missing_and_deleted(ecs: Any) -> None:
    # GIVEN twelve services (more than one DescribeServices call), one of them deleted
    names = [f"svc-{i:02d}" for i in range(12)]
    for i, name in enumerate(names):
        ecs.create_service(cluster=CLUSTER, serviceName=name, taskDefinition="airflow", desiredCount=i % 3)
    ecs.update_service(cluster=CLUSTER, service="svc-11", desiredCount=0)
    ecs.delete_service(cluster=CLUSTER, service="svc-11")
    # WHEN read together with a name that was never created
    counts = EcsServiceObserver(ecs).desired_counts(CLUSTER, [*names, "never-created"])
    # THEN every existing, active service has its desired count; the others are absent
    assert counts == {name: i % 3 for i, name in enumerate(names[:11])}
