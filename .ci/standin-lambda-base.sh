#!/usr/bin/env bash
# TEST STAND-IN, never part of a deployed artifact: builds a local image tagged as the Lambda
# base image that `sam local invoke` runs the python3.11 functions on
# (public.ecr.aws/lambda/python:3.11 and :3.11-x86_64), for machines that cannot pull from
# public.ecr.aws. It reproduces the runtime layout of the official image that SAM CLI and the
# functions rely on:
#   - Debian bookworm's python3.11 (the official image builds its own 3.11 on Amazon Linux 2),
#     reachable as /var/lang/bin/python3.11 and first on PATH
#   - /var/runtime: awslambdaric (the runtime interface client) and boto3, pinned and hashed in
#     .ci/standin-lambda-requirements.txt, plus /var/runtime/bootstrap, which RIE starts
#   - /var/task (LAMBDA_TASK_ROOT, the working directory: SAM mounts the function's code there),
#     /opt (SAM adds the layers there; /opt/python is on the import path as on Lambda)
#   - /lambda-entrypoint.sh as ENTRYPOINT with the same contract as the official one, and
#     /usr/local/bin/aws-lambda-rie (copied from SAM CLI's own package), so the image also runs
#     by itself: `docker run --network host IMAGE app.lambda_handler`
#   - the official image's environment: LAMBDA_TASK_ROOT, LAMBDA_RUNTIME_DIR, LANG, TZ, PATH,
#     LD_LIBRARY_PATH
# SAM builds its "rapid" image on top (FROM this image, ADD its RIE at /var/rapid, ADD the layers
# at /opt) and starts /var/rapid/aws-lambda-rie, which looks for /var/runtime/bootstrap.
# Nothing is downloaded inside the image (the Python packages are installed here by uv), so no
# CA certificate of this machine is copied into it.
#
#   .ci/standin-lambda-base.sh [TAG]      (skips the build when TAG already exists)
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${1:-public.ecr.aws/lambda/python:3.11}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
UV=${UV:-.venv-tools/bin/uv}
RIE=${SAM_RIE:-$(ls .venv-dev/lib/python3.11/site-packages/samcli/local/rapid/aws-lambda-rie-x86_64)}
say() { echo "standin-lambda-base: $*" >&2; }

if docker image inspect "$TAG" >/dev/null 2>&1; then
    say "$TAG exists: kept (docker rmi it to rebuild)"
    docker image inspect "$TAG-x86_64" >/dev/null 2>&1 || docker tag "$TAG" "$TAG-x86_64"
    exit 0
fi
[ -x "$UV" ] || { say "$UV is missing: run make venvs"; exit 1; }
[ -f "$RIE" ] || { say "SAM CLI's runtime interface emulator is missing ($RIE): run make venvs"; exit 1; }
if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
fi

work=$(mktemp -d /tmp/standin-lambda.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
say "debootstrap bookworm (python3.11) into $root"
debootstrap --variant=minbase --include=python3.11 bookworm "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -30 "$work/debootstrap.log" >&2; exit 1; }
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

# Compiled, as the official image ships its runtime: boto3 is imported at every cold start.
say "installing awslambdaric and boto3 into /var/runtime (hashed lock)"
"$UV" pip install --quiet --target "$root/var/runtime" --python-version 3.11 \
    --python-platform x86_64-manylinux_2_28 --only-binary :all: --compile-bytecode --require-hashes \
    -r .ci/standin-lambda-requirements.txt
mkdir -p "$root/var/lang/bin" "$root/var/task" "$root/opt" "$root/usr/local/bin"
for name in python3.11 python3 python; do ln -s /usr/bin/python3.11 "$root/var/lang/bin/$name"; done
install -m 0755 "$RIE" "$root/usr/local/bin/aws-lambda-rie"

# What RIE starts (it looks for /var/task/bootstrap, /opt/bootstrap, then this one). The import
# path is Lambda's documented order for python3.11: the function, the layers, the runtime.
cat >"$root/var/runtime/bootstrap" <<'BOOTSTRAP'
#!/bin/sh
export AWS_EXECUTION_ENV=AWS_Lambda_python3.11
export PYTHONPATH="${LAMBDA_TASK_ROOT:-/var/task}:/opt/python/lib/python3.11/site-packages:/opt/python:/var/runtime${PYTHONPATH:+:$PYTHONPATH}"
handler=${_HANDLER:-${AWS_LAMBDA_FUNCTION_HANDLER:-}}
[ -n "$handler" ] || { echo "bootstrap: no handler (_HANDLER)" >&2; exit 1; }
exec /var/lang/bin/python3.11 -m awslambdaric "$handler"
BOOTSTRAP
chmod 0755 "$root/var/runtime/bootstrap"

# The official entrypoint's contract: the handler is the one argument; without a Runtime API
# (outside Lambda) the emulator starts the runtime.
cat >"$root/lambda-entrypoint.sh" <<'ENTRYPOINT'
#!/bin/sh
if [ $# -ne 1 ]; then
    echo "entrypoint requires the handler name to be the first argument" >&2
    exit 142
fi
export _HANDLER="$1"
if [ -z "${AWS_LAMBDA_RUNTIME_API:-}" ]; then
    exec /usr/local/bin/aws-lambda-rie /var/runtime/bootstrap
fi
exec /var/runtime/bootstrap
ENTRYPOINT
chmod 0755 "$root/lambda-entrypoint.sh"

say "importing the root filesystem as $TAG"
tar -C "$root" -c . | docker import \
    --change 'ENV LANG=en_US.UTF-8' \
    --change 'ENV TZ=:/etc/localtime' \
    --change 'ENV PATH=/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin' \
    --change 'ENV LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib' \
    --change 'ENV LAMBDA_TASK_ROOT=/var/task' \
    --change 'ENV LAMBDA_RUNTIME_DIR=/var/runtime' \
    --change 'WORKDIR /var/task' \
    --change 'ENTRYPOINT ["/lambda-entrypoint.sh"]' \
    - "$TAG" >/dev/null
docker tag "$TAG" "$TAG-x86_64"
say "built $TAG and $TAG-x86_64 ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%d MB", $1/1e6}'))"
