#!/usr/bin/env bash
# A Docker engine for the gate, on machines where none runs.
#
#   .ci/docker-engine.sh start   # no-op when an engine answers; else install docker.io (apt) and
#                                # start dockerd in the background, recording that we started it
#   .ci/docker-engine.sh stop    # stop dockerd only if `start` started it
#   .ci/docker-engine.sh status  # exit 0 when an engine answers
#
# The engine runs with host networking only (--bridge=none --iptables=false --ip-masq=false):
# no bridge, no NAT, no private addresses; every container of the gate uses --network host.
# Its image cache (/var/lib/docker) is kept between runs on purpose: it makes the next build fast.
set -euo pipefail

STATE_DIR=${AFCTL_DOCKERD_STATE_DIR:-/var/run/afctl-dockerd}
PIDFILE=$STATE_DIR/dockerd.pid
LOG=${AFCTL_DOCKERD_LOG:-/var/log/afctl-dockerd.log}

say() { echo "docker-engine: $*" >&2; }
answers() { docker info --format '{{.ServerVersion}}' >/dev/null 2>&1; }

start() {
    if answers; then
        say "an engine already runs ($(docker info --format '{{.ServerVersion}}')); using it"
        return 0
    fi
    if ! command -v dockerd >/dev/null 2>&1; then
        [ "$(id -u)" = 0 ] || { say "no Docker engine and not root: install Docker or run as root"; exit 1; }
        say "installing docker.io (apt)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends docker.io >/dev/null
    fi
    command -v docker >/dev/null 2>&1 || { say "dockerd is installed but no docker client is"; exit 1; }
    [ "$(id -u)" = 0 ] || { say "starting dockerd needs root"; exit 1; }
    mkdir -p "$STATE_DIR"
    say "starting dockerd (host networking only; log: $LOG)"
    # setsid: the engine must not receive the terminal's or make's signals.
    setsid dockerd --bridge=none --iptables=false --ip-masq=false >>"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 60); do
        if answers; then
            say "engine ready ($(docker info --format '{{.ServerVersion}}'))"
            return 0
        fi
        if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
            say "dockerd exited; last lines of $LOG:"; tail -20 "$LOG" >&2; rm -f "$PIDFILE"; exit 1
        fi
        sleep 1
    done
    say "dockerd did not answer within 60 s; see $LOG"; exit 1
}

stop() {
    if [ ! -f "$PIDFILE" ]; then
        say "not started by this script: left running"
        return 0
    fi
    pid=$(cat "$PIDFILE")
    if kill -0 "$pid" 2>/dev/null; then
        say "stopping dockerd (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        if kill -0 "$pid" 2>/dev/null; then say "dockerd still running after 30 s: SIGKILL"; kill -KILL "$pid"; fi
    fi
    rm -f "$PIDFILE"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) answers ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
