#!/usr/bin/env bash
# make bench-image: the image's cold build (no layer cache, base image present) and a cached
# rebuild, timed in the same run. Starts (and then stops) a Docker engine where none runs.
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
