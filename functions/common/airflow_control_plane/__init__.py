"""Control plane for self-hosted Apache Airflow on AWS ECS Fargate, and its local runtime.

Every Lambda under ``functions/`` and the local runtime import this one package. The
control logic is pure (decide, then act); outside systems sit behind small ports with
an AWS adapter and a local adapter.
"""

__version__ = "0.1.0"
