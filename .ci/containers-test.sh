#!/usr/bin/env bash
# The image in the gate (make containers-test):
#   1. a Docker engine: the one that runs, or one this script starts (and stops at the end)
#   2. the Dockerfile's base image: pulled where a registry is reachable; otherwise the test
#      stand-in from Debian packages (.ci/standin-airflow-base.sh, cached by tag)
#   3. the Lambda base image for `sam local invoke`: pulled, or the test stand-in
#      (.ci/standin-lambda-base.sh, cached by tag)
#   4. make image (the layer cache makes a second run rebuild only what changed)
#   5. pytest -m containers with AFCTL_REQUIRE_CONTAINERS=1 (a missing engine/image fails)
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-airflow-ecs:3.3.2}
say() { echo "containers-test: $*" >&2; }

started=0
if ! .ci/docker-engine.sh status; then
    .ci/docker-engine.sh start
    started=1
fi
cleanup() { if [ "$started" = 1 ]; then .ci/docker-engine.sh stop; fi; }
trap cleanup EXIT

base=$(sed -n 's/^FROM[[:space:]]\+\([^[:space:]]\+\).*/\1/p' airflow_image/Dockerfile | head -1)
if docker image inspect "$base" >/dev/null 2>&1; then
    say "base $base is present"
elif timeout 120 docker pull --platform linux/amd64 "$base" >/dev/null 2>&1; then
    say "pulled $base"
else
    say "$base cannot be pulled here: building the test stand-in (see airflow_image/README.md)"
    .ci/standin-airflow-base.sh "${base%@*}"
fi

# The Lambda base image `sam local invoke` runs the functions on (tests/containers/test_sam_local_invoke.py).
lambda_base=public.ecr.aws/lambda/python:3.11
if docker image inspect "$lambda_base" >/dev/null 2>&1; then
    say "Lambda base $lambda_base is present"
elif timeout 120 docker pull --platform linux/amd64 "$lambda_base" >/dev/null 2>&1; then
    docker tag "$lambda_base" "$lambda_base-x86_64"
    say "pulled $lambda_base"
else
    say "$lambda_base cannot be pulled here: building the test stand-in (.ci/standin-lambda-base.sh)"
    .ci/standin-lambda-base.sh "$lambda_base"
fi

# No bridge network on engines started by docker-engine.sh: build steps use the host's.
t0=$(date +%s)
make --no-print-directory image IMAGE="$IMAGE" DOCKER_BUILD_FLAGS="--network host"
say "image $IMAGE built in $(( $(date +%s) - t0 )) s"

AFCTL_REQUIRE_CONTAINERS=1 AIRFLOW_TEST_IMAGE="$IMAGE" .venv-dev/bin/python -m pytest -m containers ${PYTEST_ARGS:-}
