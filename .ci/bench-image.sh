#!/usr/bin/env bash
# make bench-image: the image's cold build (no layer cache, base image present) and a cached
# rebuild, timed in the same run; then the Lambda side: `sam build` cold and cached, and
# `sam local invoke` with SAM's rapid image built and cached. Starts (and then stops) a Docker
# engine where none runs.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-airflow-ecs:3.3.2}
started=0
if ! .ci/docker-engine.sh status; then .ci/docker-engine.sh start; started=1; fi
trap 'if [ "$started" = 1 ]; then .ci/docker-engine.sh stop; fi' EXIT
base=$(sed -n 's/^FROM[[:space:]]\+\([^[:space:]]\+\).*/\1/p' airflow_image/Dockerfile | head -1)
docker image inspect "$base" >/dev/null 2>&1 || .ci/standin-airflow-base.sh "${base%@*}"
build() { docker build --platform linux/amd64 --network host "$@" -f airflow_image/Dockerfile -t "$IMAGE" . >/dev/null; }
t0=$(date +%s.%N); build --no-cache; t1=$(date +%s.%N); build; t2=$(date +%s.%N)
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
printf 'image %s (base %s)\n' "$IMAGE" "$base"
awk -v a="$t0" -v b="$t1" -v c="$t2" -v s="$size" 'BEGIN {
    printf "  cold build (no layer cache):   %6.1f s\n", b - a
    printf "  cached rebuild (no change):    %6.1f s\n", c - b
    printf "  image size:                    %6.0f MB\n", s / 1e6 }'

# The Lambda side: `sam build` with an empty and a warm cache, then `sam local invoke` of a pure
# function twice: the first builds SAM's rapid image (its emulator and the layer on the base
# image), the second reuses it. SAM CLI asks STS for the account id: a local moto server answers.
lambda_base=public.ecr.aws/lambda/python:3.11
docker image inspect "$lambda_base" >/dev/null 2>&1 || .ci/standin-lambda-base.sh "$lambda_base"
[ -x .venv-dev/bin/sam ] || make --no-print-directory venvs >/dev/null
work=$(mktemp -d /tmp/bench-sam.XXXXXX)
port=$(.venv-dev/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
.venv-dev/bin/moto_server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
before=$(docker images -q samcli/lambda-python | sort)
cleanup_sam() {
    kill "$moto_pid" 2>/dev/null || true
    after=$(docker images -q samcli/lambda-python | sort)
    new=$(comm -13 <(echo "$before") <(echo "$after"))
    [ -z "$new" ] || docker rmi -f $new >/dev/null 2>&1 || true
    rm -rf "$work"
    if [ "$started" = 1 ]; then .ci/docker-engine.sh stop; fi
}
trap cleanup_sam EXIT
export SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1} AWS_REGION=${AWS_REGION:-us-east-1}
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
unset PYTHONDONTWRITEBYTECODE
sam_build() {
    PATH="$PWD/.venv-dev/bin:$PATH" .venv-dev/bin/sam build --template template.yaml \
        --build-dir "$work/build" --cached --cache-dir "$work/cache" >"$work/build.log" 2>&1
}
sam_invoke() {
    AWS_ENDPOINT_URL_STS="http://127.0.0.1:$port" PATH="$PWD/.venv-dev/bin:$PATH" \
        .venv-dev/bin/python -m tests.containers.sam_host_network local invoke \
        --template "$work/build/template.yaml" --skip-pull-image --docker-network host \
        --event events/bringup_validate.json BringUpValidateFunction >"$work/invoke.out" 2>"$work/invoke.log"
    grep -q '"plan"' "$work/invoke.out" || { tail -20 "$work/invoke.log" >&2; exit 1; }
}
t0=$(date +%s.%N); sam_build; t1=$(date +%s.%N); sam_build; t2=$(date +%s.%N)
sam_invoke; t3=$(date +%s.%N); sam_invoke; t4=$(date +%s.%N)
printf 'sam local invoke (base %s)\n' "$lambda_base"
awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v e="$t4" 'BEGIN {
    printf "  sam build, empty cache:        %6.1f s\n", b - a
    printf "  sam build, cached:             %6.1f s\n", c - b
    printf "  first invoke (rapid image):    %6.1f s\n", d - c
    printf "  next invoke (image cached):    %6.1f s\n", e - d }'
