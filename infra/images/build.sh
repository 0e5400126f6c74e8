#!/usr/bin/env bash
# Build the local images the sandbox runner needs, without Docker Hub:
#   sandbox-runner/python-base:dev   debootstrap'ed Debian minbase + python3 (docker import)
#   sandbox-runner/busybox:dev       busybox-static + applet symlinks (bare `docker run` baseline)
#   localhost:5000/seo-adapter:dev   infra/adapters/seo/Dockerfile
#   localhost:5000/test-adapter:dev  infra/adapters/testkit/Dockerfile
#   sandbox-runner/egress-proxy:dev  infra/egress-proxy/Dockerfile (runs beside egress runs)
#
# Usage: sudo infra/images/build.sh [--force]
#   --force  rebuild the base images (re-runs debootstrap, ignoring the cached rootfs tarball).
# Base images are built only when absent; the adapters are rebuilt every run (layer cache).
set -euo pipefail

PYTHON_BASE=sandbox-runner/python-base:dev
BUSYBOX_BASE=sandbox-runner/busybox:dev
REGISTRY=localhost:5000
IMPORT_PATH='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

FORCE=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown argument: $arg" >&2; exit 64 ;;
    esac
done

log() { printf '[build.sh] %s\n' "$*" >&2; }
die() { printf '[build.sh] ERROR: %s\n' "$*" >&2; exit 1; }

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"
CACHE_DIR="$REPO_ROOT/.cache/images"

[[ $EUID -eq 0 ]] || die "must run as root (debootstrap and docker import need it)"
docker info >/dev/null 2>&1 || die "'docker info' failed: is dockerd running and reachable?"

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# shellcheck source=infra/images/lib.sh
source "$REPO_ROOT/infra/images/lib.sh"

build_python_base() {
    local suite tarball tmp mirror
    # shellcheck disable=SC1091
    suite="$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")"
    [[ -n "$suite" ]] || die "VERSION_CODENAME missing from /etc/os-release"
    tarball="$CACHE_DIR/python-base-$suite.tar"

    if [[ $FORCE -eq 1 || ! -s "$tarball" ]]; then
        command -v debootstrap >/dev/null || die "debootstrap is not installed"
        mirror="$(debian_mirror "$suite")"
        mkdir -p "$CACHE_DIR"
        tmp="$(mktemp -d /tmp/python-base.XXXXXX)"
        # shellcheck disable=SC2064
        trap "rm -rf '$tmp'" EXIT
        log "debootstrap --variant=minbase --include=python3 $suite -> $tmp/rootfs (mirror $mirror)"
        debootstrap --variant=minbase --include=python3 "$suite" "$tmp/rootfs" "$mirror" \
            > "$tmp/debootstrap.log" 2>&1 \
            || { tail -n 30 "$tmp/debootstrap.log" >&2; die "debootstrap failed"; }
        log "stripping apt caches, docs, man pages, locales"
        local r="$tmp/rootfs"
        rm -rf "$r"/var/cache/apt/* "$r"/var/lib/apt/lists/* "$r"/var/log/* \
            "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/locale/* \
            "$r"/usr/share/lintian "$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old
        # Keep the copyright files (license obligations), drop everything else under doc/.
        find "$r/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
        find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
        log "writing rootfs tarball $tarball"
        tar --numeric-owner -C "$r" -cf "$tarball.part" .
        mv -f "$tarball.part" "$tarball"
        rm -rf "$tmp"
        trap - EXIT
    else
        log "using cached rootfs tarball $tarball (skip debootstrap)"
    fi
    log "docker import $tarball -> $PYTHON_BASE"
    docker import -c "$IMPORT_PATH" -c 'CMD ["python3"]' \
        -m "debootstrap minbase $suite + python3" "$tarball" "$PYTHON_BASE" >/dev/null
}

build_busybox_base() {
    local bb tmp r applet
    bb="$(command -v busybox || true)"
    [[ -n "$bb" ]] || die "busybox (busybox-static) is not installed"
    tmp="$(mktemp -d /tmp/busybox-base.XXXXXX)"
    r="$tmp/rootfs"
    mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,root}
    chmod 1777 "$r/tmp"
    cp "$bb" "$r/bin/busybox"
    # Same layout as `busybox --install -s`, but computed on the host so no chroot
    # (and no /proc inside it) is needed.
    while read -r applet; do
        [[ "$applet" == bin/busybox ]] && continue
        ln -sf /bin/busybox "$r/$applet"
    done < <("$r/bin/busybox" --list-full)
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' \
        > "$r/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$r/etc/group"
    log "docker import busybox rootfs -> $BUSYBOX_BASE"
    tar --numeric-owner -C "$r" -c . \
        | docker import -c "$IMPORT_PATH" -c 'CMD ["sh"]' -m "busybox-static" - "$BUSYBOX_BASE" \
        >/dev/null
    rm -rf "$tmp"
}

if [[ $FORCE -eq 1 ]] || ! image_exists "$PYTHON_BASE"; then
    build_python_base
else
    log "$PYTHON_BASE present (use --force to rebuild)"
fi

if [[ $FORCE -eq 1 ]] || ! image_exists "$BUSYBOX_BASE"; then
    build_busybox_base
else
    log "$BUSYBOX_BASE present (use --force to rebuild)"
fi

for spec in seo:seo-adapter testkit:test-adapter; do
    dir="${spec%%:*}"
    tag="$REGISTRY/${spec#*:}:dev"
    log "docker build -f infra/adapters/$dir/Dockerfile -t $tag ."
    # Legacy builder: BuildKit would try to resolve the base image's metadata remotely.
    # Its output (and the client's deprecation banner) is shown only when the build fails.
    if ! out="$(DOCKER_BUILDKIT=0 docker build --build-arg "BASE_IMAGE=$PYTHON_BASE" \
            -f "infra/adapters/$dir/Dockerfile" -t "$tag" . 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "docker build of $tag failed"
    fi
    log "  -> $(docker image inspect -f '{{.Id}}' "$tag" | cut -c1-19)"
done

# The egress proxy is the platform's own image, not an adapter: it is not pushed anywhere.
EGRESS_PROXY=sandbox-runner/egress-proxy:dev
log "docker build -f infra/egress-proxy/Dockerfile -t $EGRESS_PROXY ."
if ! out="$(DOCKER_BUILDKIT=0 docker build --build-arg "BASE_IMAGE=$PYTHON_BASE" \
        -f infra/egress-proxy/Dockerfile -t "$EGRESS_PROXY" . 2>&1)"; then
    printf '%s\n' "$out" >&2
    die "docker build of $EGRESS_PROXY failed"
fi
log "  -> $(docker image inspect -f '{{.Id}}' "$EGRESS_PROXY" | cut -c1-19)"

log "done:"
docker image ls --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' \
    | grep -E "sandbox-runner/|$REGISTRY/" >&2 || true
