#!/usr/bin/env bash
# Build docker/Dockerfile for real and check what the image does:
#   1. a container engine: docker when its engine answers (`docker info`), else podman, else (as
#      root, with apt) Debian's podman and runc are installed;
#   2. the Dockerfile's base image (FROM): reused when present, else pulled, else made from
#      Debian's packages (debootstrap --variant=minbase) and imported under that same name, so the
#      Dockerfile stays the one a user with a registry builds;
#   3. the image, built from the repository (pip inside gets the machine's CA bundle and package
#      index when it has its own, through build arguments that are empty by default);
#   4. in the container: the main demo (the image's default command, mpirun -n 2) writing to a bind
#      mount, its outputs checked on the host (HDF5 opens, PNGs are PNGs); one estimation run,
#      small (`sensitivity-estimate` on runs/rate_matrix.toml with fewer draws); a short test selection.
# Prints the image size and the time of every step. Environment:
#   SENSITIVITY_ENGINE=docker|podman  use this engine
#   SENSITIVITY_IMAGE=NAME            tag of the image (default: sensitivity)
#   SENSITIVITY_BASE_PULL=0           do not try to pull the base image
#   SENSITIVITY_DEBIAN_MIRROR=URL     Debian mirror for debootstrap (default http://deb.debian.org/debian)
#   SENSITIVITY_HOST_CA=FILE          CA bundle for pip in the build ("" for none; default: the
#                                     machine's own, when it has one)
#   TMPDIR                            where the work directory goes (default /var/tmp)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

DOCKERFILE=docker/Dockerfile
IMAGE="${SENSITIVITY_IMAGE:-sensitivity}"
CONTAINER_UID=1000   # the image's user (docker/Dockerfile)

say() { printf 'docker/test.sh: %s\n' "$*"; }
die() { printf 'docker/test.sh: error: %s\n' "$*" >&2; exit 1; }

TIMINGS=()
# timed LABEL CMD...: run CMD and record how long it took.
timed() {
    local label="$1" t0="$EPOCHREALTIME"
    shift
    "$@"
    local dt
    dt="$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')"
    TIMINGS+=("$(printf '%-34s %7s s' "$label" "$dt")")
    say "$label: $dt s"
}

work="$(mktemp -d "${TMPDIR:-/var/tmp}/sensitivity-docker.XXXXXX")"
ENGINE=""
cleanup() {
    local status=$?
    rm -rf "$work/rootfs"
    # Files the container wrote belong to its user: a non-root caller may need the container to
    # remove them.
    if ! rm -rf "$work/output" 2>/dev/null && [ -n "$ENGINE" ]; then
        "$ENGINE" run --rm "${RUN_FLAGS[@]}" -v "$work/output:/work/output" "$IMAGE" \
            bash -c 'rm -rf /work/output/* /work/output/.[!.]*' >/dev/null 2>&1 || true
        rm -rf "$work/output" 2>/dev/null || say "could not remove $work/output"
    fi
    if [ "$status" = 0 ]; then rm -rf "$work"; else say "logs kept in $work"; fi
}
trap cleanup EXIT

# ----------------------------------------------------------------------------------- the engine

APT_UPDATED=0
apt_install() {
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
        || die "need $* (install it, or run this as root on Debian/Ubuntu)"
    if [ "$APT_UPDATED" = 0 ]; then apt-get update -qq; APT_UPDATED=1; fi
    say "installing $* (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

choose_engine() {
    if [ -n "${SENSITIVITY_ENGINE:-}" ]; then
        ENGINE="$SENSITIVITY_ENGINE"
    elif command -v docker >/dev/null 2>&1 && timeout 30 docker info >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null 2>&1; then
        ENGINE=podman
    else
        command -v docker >/dev/null 2>&1 && say "docker is only a client here (docker info fails): using podman"
        apt_install podman runc
        ENGINE=podman
    fi
    command -v "$ENGINE" >/dev/null 2>&1 || die "no $ENGINE on PATH"
    say "engine: $("$ENGINE" --version)"
}

image_exists() {
    if [ "$ENGINE" = podman ]; then podman image exists "$1"; else docker image inspect "$1" >/dev/null 2>&1; fi
}

# Flags of every `run`; podman as root on these machines needs the host's limits.
RUN_FLAGS=()
BUILD_FLAGS=()

# Podman's own configuration first; where it cannot start a container (crun and cgroups in hybrid
# mode, setrlimit refused), docker/containers.conf: runc, cgroupfs, no default ulimits.
configure_podman() {
    [ "$ENGINE" = podman ] || return 0
    RUN_FLAGS=(--ulimit host)
    local base="$1" err
    if err="$(podman run --rm "${RUN_FLAGS[@]}" "$base" true 2>&1)"; then
        say "podman runs containers with its own configuration"
        return 0
    fi
    say "podman's own configuration cannot start a container here: $(printf '%s' "$err" | tail -n 1)"
    [ -n "${CONTAINERS_CONF:-}" ] && die "and CONTAINERS_CONF=$CONTAINERS_CONF is set: fix it or unset it"
    command -v runc >/dev/null 2>&1 || apt_install runc
    export CONTAINERS_CONF="$root/docker/containers.conf"
    say "using CONTAINERS_CONF=$CONTAINERS_CONF (runc, cgroupfs, no default ulimits)"
    err="$(podman run --rm "${RUN_FLAGS[@]}" "$base" true 2>&1)" \
        || die "podman still cannot start a container: $err"
}

# ----------------------------------------------------------------------------------- the base image

base_name() {
    awk 'toupper($1) == "FROM" { print $2; exit }' "$DOCKERFILE"
}

# The name podman stores an imported short name under: the one `FROM` resolves to.
qualified() {
    local name="$1" first="${1%%/*}"
    if [ "$ENGINE" = podman ]; then
        if [[ "$name" != */* ]]; then name="docker.io/library/$name"
        elif [[ "$first" != *.* && "$first" != *:* && "$first" != localhost ]]; then name="docker.io/$name"
        fi
    fi
    printf '%s\n' "$name"
}

# A minimal Debian SUITE root file system, imported as NAME (debian:SUITE or debian:SUITE-slim).
make_debian_base() {
    local name="$1" tag suite tree
    tag="${name##*:}"
    suite="${tag%-slim}"
    [[ "${name%:*}" =~ ^(docker\.io/)?(library/)?debian$ && "$suite" =~ ^[a-z]+$ ]] \
        || die "cannot pull $name and cannot make it from Debian's packages (only debian:SUITE[-slim])"
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    tree="$work/rootfs"
    mkdir "$tree"
    say "making $name: debootstrap --variant=minbase $suite (a few minutes)"
    debootstrap --variant=minbase "$suite" "$tree" "${SENSITIVITY_DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
        >"$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
    # As Debian's own images have it: deb822 sources with updates and security, no package lists,
    # no documentation installed later, no host files.
    rm -f "$tree/etc/apt/sources.list" "$tree/etc/hostname" "$tree/etc/resolv.conf"
    : >"$tree/etc/machine-id"
    cat >"$tree/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    cat >"$tree/etc/dpkg/dpkg.cfg.d/excludes" <<'EOF'
# documentation is left out of packages installed in this image (copyright files are kept)
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
EOF
    rm -rf "$tree"/var/lib/apt/lists/* "$tree"/var/cache/apt/*.bin "$tree"/var/cache/apt/archives/*.deb \
        "$tree"/var/log/* "$tree"/tmp/* "$tree"/root/.cache
    tar -C "$tree" --numeric-owner -c . | "$ENGINE" import --change 'CMD ["bash"]' - "$(qualified "$name")" >/dev/null
    rm -rf "$tree"
    say "imported $(qualified "$name") ($("$ENGINE" image inspect --format '{{.Size}}' "$(qualified "$name")" \
        | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
}

ensure_base() {
    local name="$1"
    if image_exists "$name"; then
        say "base image $name: present, reused"
        return 0
    fi
    if [ "${SENSITIVITY_BASE_PULL:-1}" != 0 ]; then
        say "pulling $name"
        if timeout 300 "$ENGINE" pull "$name" >"$work/pull.log" 2>&1; then return 0; fi
        say "cannot pull $name: $(tail -n 1 "$work/pull.log")"
    fi
    make_debian_base "$name"
}

# ----------------------------------------------------------------------------------- the build

# The machine's own CA bundle, when pip here is told to use one (a TLS-inspecting proxy, say).
host_ca() {
    if [ -n "${SENSITIVITY_HOST_CA+set}" ]; then printf '%s\n' "$SENSITIVITY_HOST_CA"; return; fi
    local f
    for f in "${PIP_CERT:-}" "$(python3 -m pip config get global.cert 2>/dev/null || true)"; do
        if [ -n "$f" ] && [ -f "$f" ]; then printf '%s\n' "$f"; return; fi
    done
}

# A package index of the machine's own that a container can reach too (not a file:// one).
forward_index() {
    local var value
    for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL; do
        value="${!var:-}"
        value="$(printf '%s\n' $value | grep -v '^file:' | paste -sd' ' || true)"
        [ -n "$value" ] && BUILD_FLAGS+=(--build-arg "$var=$value")
    done
    return 0
}

build_image() {
    local ca old
    ca="$(host_ca)"
    if [ -n "$ca" ]; then
        if [ "$ENGINE" = podman ]; then
            # mounted at a neutral path: over /etc/ssl/certs it would break the image's ca-certificates
            BUILD_FLAGS+=(-v "$(readlink -f "$ca"):/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
            say "pip in the build uses this machine's CA bundle $ca"
        else
            say "note: docker build cannot mount $ca; pip in the build uses the image's CA bundle"
        fi
    fi
    forward_index
    [ "$ENGINE" = podman ] && BUILD_FLAGS+=(--pull=never)
    old="$("$ENGINE" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
    say "$ENGINE build -f $DOCKERFILE -t $IMAGE ${BUILD_FLAGS[*]} ."
    "$ENGINE" build -f "$DOCKERFILE" -t "$IMAGE" "${BUILD_FLAGS[@]}" . >"$work/build.log" 2>&1 \
        || { tail -n 40 "$work/build.log" >&2; die "the build failed"; }
    grep -E '^sensitivity [0-9]' "$work/build.log" | sed 's/^/  build: /' || true
    # the previous image of this tag, now untagged, would pile up over runs
    if [ -n "$old" ] && [ "$old" != "$("$ENGINE" image inspect --format '{{.Id}}' "$IMAGE")" ]; then
        "$ENGINE" rmi "$old" >/dev/null 2>&1 || true
    fi
}

# ----------------------------------------------------------------------------------- the runs

# Output of the container goes to $work/output, mounted at /work/output (the image's user, uid
# 1000, must be able to write there; what it writes must be readable here).
prepare_output() {
    mkdir -p "$work/output"
    if [ "$(id -u)" = 0 ]; then
        chown "$CONTAINER_UID:$CONTAINER_UID" "$work/output"
    else
        chmod 0777 "$work/output"
    fi
}

# run_in_container LOG CMD...: run CMD in the image (its default command when CMD is empty); the
# output is kept in LOG and shown without progress bars.
run_in_container() {
    local log="$1"
    shift
    "$ENGINE" run --rm "${RUN_FLAGS[@]}" -v "$work/output:/work/output" "$IMAGE" "$@" 2>&1 \
        | tee "$log" | tr '\r' '\n' | sed -e '/%|/d' -e '/^ *$/d' -e 's/^/  | /'
}

# check_outputs DIR FILE...: on the host, every FILE in $work/output/DIR exists and is readable;
# HDF5 files open, PNG files are PNG images, JSON files parse.
check_outputs() {
    local dir="$1"
    shift
    (
        source "$root/scripts/bootstrap.sh" >/dev/null
        python - "$work/output/$dir" "$@" <<'EOF'
import json, os, sys
from pathlib import Path

import h5py

out = Path(sys.argv[1])
leftovers = [p.name for p in out.iterdir() if p.name.endswith(".partial")]
assert not leftovers, f"temporaries left in {out}: {leftovers}"
for name in sys.argv[2:]:
    path = out / name
    assert path.exists(), f"missing {path}"
    assert os.access(path, os.R_OK), f"not readable here: {path}"
    owner = path.stat().st_uid
    if name.endswith(".h5"):
        with h5py.File(path, "r") as f:
            entries = []
            f.visit(entries.append)
        what = f"HDF5, {len(entries)} entries"
    elif name.endswith(".png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"not a PNG: {path}"
        what = f"PNG, {path.stat().st_size} bytes"
    elif name.endswith(".json"):
        what = f"JSON, {len(json.loads(path.read_text()))} keys"
    elif path.is_dir():
        what = f"directory, {sum(1 for _ in path.rglob('*'))} files"
    else:
        what = f"{path.stat().st_size} bytes"
    print(f"  ok {path.relative_to(out.parent)}: {what} (owner uid {owner})")
EOF
    )
}

run_main_demo() {
    run_in_container "$work/demo.log"
    grep -q '^wrote output/velocity_sensitivity/' "$work/demo.log" || die "the demo did not say what it wrote"
}

check_main_demo() {
    check_outputs velocity_sensitivity velocity_sensitivity.h5 velocity_sensitivity.png snapshots.png \
        fields.bp velocity.bp
}

# One estimation run, small: the example run file runs/rate_matrix.toml with fewer draws, written
# into the mounted output directory, run by the entry point `sensitivity-estimate` on two ranks.
run_estimation_small() {
    sed -e 's/^num_warmup = .*/num_warmup = 100/' -e 's/^num_draws = .*/num_draws = 100/' \
        -e 's|^directory = .*|directory = "output/rate_matrix"|' runs/rate_matrix.toml >"$work/output/rate_matrix_small.toml"
    grep -q '^num_draws = 100$' "$work/output/rate_matrix_small.toml" || die "could not shorten runs/rate_matrix.toml"
    run_in_container "$work/estimation.log" \
        mpirun -n 2 sensitivity-estimate output/rate_matrix_small.toml
}

check_estimation_small() {
    check_outputs rate_matrix summary.json posterior.nc trace.png chains config.json
}

run_test_selection() {
    run_in_container "$work/tests.log" \
        python -m pytest -q -p no:cacheprovider tests/test_dense_frechet.py tests/test_fem_tangent.py
}

# ----------------------------------------------------------------------------------- main

t_start="$EPOCHREALTIME"
timed "engine" choose_engine
base="$(base_name)"
[ -n "$base" ] || die "no FROM line in $DOCKERFILE"
timed "base image $base" ensure_base "$(qualified "$base")"
timed "engine check" configure_podman "$(qualified "$base")"
timed "build" build_image
size="$("$ENGINE" image inspect --format '{{.Size}}' "$IMAGE" | awk '{ printf "%.2f GB", $1 / 1e9 }')"
say "image $IMAGE: $size"
prepare_output
say "main demo: $ENGINE run --rm ${RUN_FLAGS[*]} -v OUT:/work/output $IMAGE"
timed "main demo (mpirun -n 2)" run_main_demo
timed "main demo outputs, on the host" check_main_demo
say "estimation, small"
timed "estimation run, small (mpirun -n 2)" run_estimation_small
timed "estimation outputs, on the host" check_estimation_small
say "test selection"
timed "test selection (serial)" run_test_selection
total="$(awk -v a="$t_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')"

say "summary: engine $ENGINE, image $IMAGE $size"
printf '  %s\n' "${TIMINGS[@]}"
printf '  %-34s %7s s\n' "total" "$total"
say "passed"
