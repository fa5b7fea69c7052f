#!/usr/bin/env bash
# TEST STAND-IN, never used by a user's `make image`: builds a local image tagged as the
# Dockerfile's FROM (apache/airflow:3.3.2-python3.11) from Debian packages, for machines that
# cannot pull from Docker Hub. It reproduces what the project relies on in the official image:
#   - Debian bookworm, python3.11 with pip and venv, dumb-init, libpq5, git
#   - user airflow, uid 50000, primary group 0; a venv at /home/airflow/.local first on PATH;
#     AIRFLOW_HOME=/opt/airflow; USER airflow
#   - Airflow 3.3.2 and its dependencies already installed in that venv with every *.pyc
#     deleted, as the official image ships them (so the Dockerfile's own bytecode step is tested)
# Machine quirk handled here only: package downloads go through this machine's TLS-inspecting
# egress, so the host's CA bundle is copied in and pip is pointed at it. The product Dockerfile
# knows nothing of this.
#
#   .ci/standin-airflow-base.sh [TAG]      (skips the build when TAG already exists)
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${1:-$(sed -n 's/^FROM[[:space:]]\+\([^[:space:]@]\+\).*/\1/p' airflow_image/Dockerfile | head -1)}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
STANDIN_PIP_VERSION=${STANDIN_PIP_VERSION:-25.1.1}
say() { echo "standin-base: $*" >&2; }

if docker image inspect "$TAG" >/dev/null 2>&1; then
    say "$TAG exists: kept (docker rmi it to rebuild)"
    exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
fi

work=$(mktemp -d /tmp/standin-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
ROOTFS_TAG=$TAG-standin-rootfs
if docker image inspect "$ROOTFS_TAG" >/dev/null 2>&1; then
    say "$ROOTFS_TAG exists: debootstrap skipped"
else
root=$work/rootfs
say "debootstrap bookworm into $root"
debootstrap --variant=minbase \
    --include=python3.11,python3-pip,python3-venv,python3-distutils,python3-lib2to3,dumb-init,libpq5,git,ca-certificates \
    bookworm "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -30 "$work/debootstrap.log" >&2; exit 1; }

# The machine's CA bundle (includes its extra certificates), for pip and git inside builds.
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\ndisable-pip-version-check = true\n' >"$root/etc/pip.conf"

chroot "$root" /usr/sbin/useradd --uid 50000 --gid 0 --create-home --home-dir /home/airflow --shell /bin/bash airflow
chroot "$root" /usr/bin/python3.11 -m venv /home/airflow/.local
mkdir -p "$root/opt/airflow"
chroot "$root" /bin/chown -R 50000:0 /home/airflow /opt/airflow
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

say "importing the root filesystem"
tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/home/airflow/.local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV AIRFLOW_HOME=/opt/airflow' \
    --change 'ENV AIRFLOW_USER_HOME_DIR=/home/airflow' \
    --change 'ENV PYTHONDONTWRITEBYTECODE=1' \
    --change 'USER 50000:0' \
    --change 'WORKDIR /opt/airflow' \
    --change 'ENTRYPOINT ["/usr/bin/dumb-init", "--"]' \
    - "$ROOTFS_TAG" >/dev/null
rm -rf "$root"
fi

say "installing Airflow into the venv and deleting its bytecode (as the official image does)"
# The official image ships a current pip (Debian's 23.0 cannot install the hashed lock: it
# treats the extra in `celery[redis]` as an unpinned requirement).
mkdir "$work/context"
cp airflow_image/requirements.txt "$work/context/requirements.txt"
cat >"$work/context/Dockerfile" <<DOCKERFILE
FROM $ROOTFS_TAG
COPY requirements.txt /tmp/standin-requirements.txt
RUN pip install --no-cache-dir --upgrade pip==$STANDIN_PIP_VERSION \
    && pip install --no-cache-dir --require-hashes -r /tmp/standin-requirements.txt \
    && find /home/airflow/.local -name '*.pyc' -delete \
    && find /home/airflow/.local -name __pycache__ -type d -empty -delete
DOCKERFILE
docker build --network host --force-rm -t "$TAG" "$work/context" >"$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log" >&2; say "building $TAG failed"; exit 1; }
say "built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%d MB", $1/1e6}'))"
