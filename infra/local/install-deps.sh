#!/usr/bin/env bash
# Install and start what the fleet needs on a Debian/Ubuntu machine, skipping what is there:
# Docker engine (docker.io), PostgreSQL, Redis, debootstrap and busybox-static (offline images),
# docker-compose (v1; validates and runs compose.yaml in tests/deploy).
# Idempotent; needs root (or sudo).
set -euo pipefail

log() { printf '[install-deps] %s\n' "$*" >&2; }
SUDO=""
[[ $EUID -eq 0 ]] || SUDO="sudo"

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
[[ -x /bin/busybox ]] || need+=(busybox-static)
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v curl >/dev/null 2>&1 || need+=(curl)
# Observability: promtool checks the alert rules; headless Chromium drives the Flower test.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
# Image policy tests (tests/security) start their own registry on a free loopback port.
[[ -x /usr/bin/docker-registry ]] || need+=(docker-registry)
if ((${#need[@]})); then
    log "installing: ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
    # The package's own service would listen on :5000 (localhost:5000 is the dev image prefix);
    # tests start private registries instead.
    if [[ " ${need[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null 2>&1; then
        $SUDO systemctl disable --now docker-registry >/dev/null 2>&1 || true
    fi
fi

# PostgreSQL: start the cluster if nothing listens on 5432.
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    log "starting PostgreSQL"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start
    for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
# Local trust auth is how this machine kind ships; a stock install wants the postgres role.
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
    log "PostgreSQL does not accept user postgres over TCP without a password;"
    log "set SANDBOX_DATABASE_URL to a URL that works (see README)"
fi

# Redis: a broker should survive a restart, so keep an append-only file when we start it.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    log "starting Redis"
    $SUDO mkdir -p /var/lib/redis /var/log/redis
    $SUDO redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --dir /var/lib/redis \
        --appendonly yes --logfile /var/log/redis/sandbox-runner.log
    for _ in $(seq 1 30); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.5; done
fi

# Docker engine: start dockerd in the background if the socket does not answer.
if ! docker info >/dev/null 2>&1; then
    log "starting dockerd"
    $SUDO mkdir -p /var/log
    $SUDO sh -c 'nohup dockerd >/var/log/dockerd-sandbox-runner.log 2>&1 &'
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { log "dockerd did not start; see /var/log/dockerd-sandbox-runner.log"; exit 1; }
fi
# Azurite (the Blob Storage emulator the tests use), pinned: later versions need a newer Node.
AZURITE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.cache/azurite"
if [[ ! -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ]]; then
    log "installing azurite 3.35.0 into $AZURITE_DIR"
    mkdir -p "$AZURITE_DIR"
    (cd "$AZURITE_DIR" && npm install --no-audit --no-fund --silent azurite@3.35.0 >/dev/null)
fi
log "dependencies ready (postgres, redis, docker, azurite)"
