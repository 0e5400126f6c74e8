#!/usr/bin/env bash
# Build the fleet's service image without Docker Hub or PyPI inside the build:
#   sandbox-runner/python-venv-base:dev  debootstrap'ed Debian minbase + python3, venv, pip, CA certs
#   sandbox-runner/service:dev           infra/service/Dockerfile on that base
#
# Usage: sudo infra/service/build.sh [--force] [--tag IMAGE]
#   --force  rebuild the base (re-runs debootstrap, ignoring the cached rootfs tarball)
#   --tag    name of the service image (default sandbox-runner/service:dev)
#
# Wheels for requirements/base.txt are built on the host into .cache/wheels (the build container
# may not reach PyPI) and installed in the image with `pip install --no-index`. The base is built
# only when absent; the service image is rebuilt every run and is a layer-cache hit when nothing
# changed. With a registry at hand, build infra/service/Dockerfile directly: its BASE_IMAGE
# defaults to python:3.11-slim.
set -euo pipefail

VENV_BASE=sandbox-runner/python-venv-base:dev
TAG=sandbox-runner/service:dev
IMPORT_PATH='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

FORCE=0
while (($#)); do
    case "$1" in
        --force) FORCE=1 ;;
        --tag) TAG="${2:?--tag needs a value}"; shift ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown argument: $1" >&2; exit 64 ;;
    esac
    shift
done

log() { printf '[service/build.sh] %s\n' "$*" >&2; }
die() { printf '[service/build.sh] ERROR: %s\n' "$*" >&2; exit 1; }

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"
CACHE_DIR="$REPO_ROOT/.cache/images"
WHEELS="$REPO_ROOT/.cache/wheels"
PIP="$REPO_ROOT/.venv/bin/pip"

docker info >/dev/null 2>&1 || die "'docker info' failed: is dockerd running and reachable?"
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# shellcheck source=infra/images/lib.sh
source "$REPO_ROOT/infra/images/lib.sh"

build_venv_base() {
    local suite tarball tmp mirror r
    # shellcheck disable=SC1091
    suite="$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")"
    [[ -n "$suite" ]] || die "VERSION_CODENAME missing from /etc/os-release"
    tarball="$CACHE_DIR/python-venv-base-$suite.tar"

    if [[ $FORCE -eq 1 || ! -s "$tarball" ]]; then
        [[ $EUID -eq 0 ]] || die "must run as root to debootstrap the base (once; it is cached)"
        command -v debootstrap >/dev/null || die "debootstrap is not installed"
        mirror="$(debian_mirror "$suite")"
        mkdir -p "$CACHE_DIR"
        tmp="$(mktemp -d /tmp/python-venv-base.XXXXXX)"
        # shellcheck disable=SC2064
        trap "rm -rf '$tmp'" EXIT
        log "debootstrap --variant=minbase python3 python3-venv python3-pip ca-certificates $suite"
        debootstrap --variant=minbase \
            --include=python3,python3-venv,python3-pip,ca-certificates \
            "$suite" "$tmp/rootfs" "$mirror" > "$tmp/debootstrap.log" 2>&1 \
            || { tail -n 30 "$tmp/debootstrap.log" >&2; die "debootstrap failed"; }
        r="$tmp/rootfs"
        rm -rf "$r"/var/cache/apt/* "$r"/var/lib/apt/lists/* "$r"/var/log/* \
            "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/locale/* \
            "$r"/usr/share/lintian "$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old
        # Keep the copyright files (license obligations), drop everything else under doc/.
        find "$r/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
        find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
        tar --numeric-owner -C "$r" -cf "$tarball.part" .
        mv -f "$tarball.part" "$tarball"
        rm -rf "$tmp"
        trap - EXIT
    else
        log "using cached rootfs tarball $tarball (skip debootstrap)"
    fi
    log "docker import $tarball -> $VENV_BASE"
    docker import -c "$IMPORT_PATH" -c 'CMD ["python3"]' \
        -m "debootstrap minbase $suite + python3, python3-venv, python3-pip" \
        "$tarball" "$VENV_BASE" >/dev/null
}

# requirements/base.txt is compiled on the host's Python (3.11.7 here). Debian bookworm's python3 is
# 3.11.2, and redis then also needs async-timeout (marker python_full_version < "3.11.3"); its wheel
# is added to the cache so the offline image resolves. Harmless where the marker is false.
IMAGE_ONLY_WHEELS=(async-timeout==5.0.1)

build_wheels() {
    mkdir -p "$WHEELS"
    # Offline first: when every pinned wheel is already cached this needs no index at all.
    if "$PIP" wheel -q --no-index --find-links "$WHEELS" -w "$WHEELS" \
            -r requirements/base.txt "${IMAGE_ONLY_WHEELS[@]}" >/dev/null 2>&1; then
        log "wheels for requirements/base.txt: all cached in .cache/wheels"
        return
    fi
    log "pip wheel -r requirements/base.txt -w .cache/wheels (host side)"
    "$PIP" wheel -q --find-links "$WHEELS" -w "$WHEELS" \
        -r requirements/base.txt "${IMAGE_ONLY_WHEELS[@]}" || die "pip wheel failed"
}

[[ -x "$PIP" ]] || die "$PIP missing: run 'make venv' first"

if [[ $FORCE -eq 1 ]] || ! image_exists "$VENV_BASE"; then
    build_venv_base
else
    log "$VENV_BASE present (use --force to rebuild)"
fi

build_wheels

log "docker build -f infra/service/Dockerfile -t $TAG ."
# Legacy builder: BuildKit would try to resolve the base image's metadata remotely.
if ! out="$(DOCKER_BUILDKIT=0 docker build --build-arg "BASE_IMAGE=$VENV_BASE" \
        -f infra/service/Dockerfile -t "$TAG" . 2>&1)"; then
    printf '%s\n' "$out" >&2
    die "docker build of $TAG failed"
fi
log "  -> $TAG $(docker image inspect -f '{{.Id}}' "$TAG" | cut -c1-19)" \
    "$(docker image ls --format '{{.Size}}' "$TAG")"
