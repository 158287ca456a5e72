#!/usr/bin/env bash
# make docker-test: build the repository's Dockerfile for real and run the default profile in the
# image, as the README tells reviewers, on a machine without a GPU and without Docker Hub.
#
#   make docker-test                  # or: bash tools/docker_test.sh
#
# 1. docker.io and debootstrap come from apt when missing; dockerd is started (--iptables=false) if
#    none runs, and stopped afterwards if this script started it.
# 2. The base image is Debian bookworm made from Debian's packages (debootstrap | docker import),
#    cached under the tag $BASE_TAG, so a second run skips this step. It carries this machine's CA
#    bundle and pip's cert setting (copied from the host), so that pip inside the build reaches PyPI
#    where the host does (here through a TLS proxy).
# 3. The SAME Dockerfile is built on it with --build-arg BASE_IMAGE=$BASE_TAG and --network host.
#    The host's own pip sources (pip config list: find-links, extra-index-url, constraint, e.g. a
#    local CPU build of torch) that are local folders or files are served over http on 127.0.0.1 for
#    the build and passed as the Dockerfile's PIP_* build arguments; remote ones are passed as they
#    are. The CUDA-only step (DeepSpeed's CUDA ops) skips itself: no nvcc in this base.
# 4. The default profile runs in a fresh temporary folder exactly as the README says, as the
#    image's non-root user: docker run --ipc=host --ulimit memlock=-1 -v "$PWD/results:/work/results" IMAGE snakemake --cores all
#    (--gpus all is left out: no GPU and no NVIDIA Container Toolkit here).
# 5. Checks: every output on the host belongs to the invoking user (run as root: uid 1000, the
#    image's default user, stands in for the reviewer), Snakemake has nothing left to do, the
#    compare step finds every metric within tolerance of results/reference/<profile>/, and the
#    entrypoint's hints fire for real (no GPU, a small /dev/shm, an unwritable results/).
#
# Prints a summary (also written to $DOCKER_TEST_SUMMARY, default results/reference/docker-test.txt)
# and exits 0 only if every check passed. Too heavy for CI (~25 min on 2 cores cold): not in .ci/run.
#
# Environment: BASE_TAG, IMAGE_TAG, DEBIAN_MIRROR, DOCKER_TEST_SUMMARY, OFFLOADBENCH_TEST_UID (the
# reviewer's uid when run as root), DOCKER_TEST_KEEP=1 (keep the temporary folder),
# DOCKER_TEST_NO_CACHE=1 (build every layer anew, for a cold build time; the base stays cached).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

BASE_TAG=${BASE_TAG:-offloadbench-test-base:debian-bookworm}
IMAGE_TAG=${IMAGE_TAG:-offloadbench:docker-test}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUMMARY_FILE=${DOCKER_TEST_SUMMARY:-$REPO/results/reference/docker-test.txt}
export DOCKER_BUILDKIT=0 # the classic builder: BuildKit needs the buildx plugin (not in Debian 12's
# docker.io) and would pull the Dockerfile's `# syntax=` frontend image from Docker Hub.

WORK=$(mktemp -d "${TMPDIR:-/tmp}/offloadbench-docker-test.XXXXXX")
chmod 0755 "$WORK"
STARTED_DOCKERD="" HTTP_PID="" MEMLOCK_NOTE=""
declare -a CHECKS=() memlock_args=()
FAILED=0

log() { printf '[docker-test %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
check() { # check NAME PASS|FAIL DETAIL
    CHECKS+=("$(printf '%-4s %-34s %s' "$2" "$1" "$3")")
    if [ "$2" != PASS ]; then FAILED=1; fi
    log "$2 $1: $3"
}
seconds() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", b - a }'; }
human() { awk -v s="$1" 'BEGIN { printf "%d min %02d s", s / 60, s % 60 }'; }

# shellcheck disable=SC2317  # called through the trap
cleanup() {
    local rc=$?
    if [ -n "$HTTP_PID" ]; then kill "$HTTP_PID" 2>/dev/null || true; wait "$HTTP_PID" 2>/dev/null || true; fi
    if [ -n "$STARTED_DOCKERD" ]; then
        log "stopping the dockerd this script started (pid $STARTED_DOCKERD)"
        kill "$STARTED_DOCKERD" 2>/dev/null || true
        for _ in $(seq 60); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 1; done
    fi
    if [ "${DOCKER_TEST_KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then
        log "logs and results kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
# 1. Tools and the daemon

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif sudo -n true 2>/dev/null; then sudo "$@"
    else log "error: '$*' needs root (or password-less sudo)"; exit 1
    fi
}

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]} with apt"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >"$WORK/apt.log"
fi

if ! docker info >/dev/null 2>&1; then
    log "no Docker daemon answers: starting dockerd --iptables=false (log: $WORK/dockerd.log)"
    if [ "$(id -u)" != 0 ]; then log "error: starting dockerd needs root"; exit 1; fi
    dockerd --iptables=false >"$WORK/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { tail -20 "$WORK/dockerd.log" >&2; log "error: dockerd did not come up"; exit 1; }
fi
DOCKER_VERSION=$(docker version --format 'client {{.Client.Version}}, engine {{.Server.Version}}')
log "docker: $DOCKER_VERSION"

# ---------------------------------------------------------------------------------------------
# 2. The base image: Debian bookworm from Debian's packages, cached by tag

BASE_NOTE=""
if docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
    BASE_NOTE="cached ($BASE_TAG, made $(docker image inspect -f '{{.Created}}' "$BASE_TAG" | cut -c1-19))"
    log "base image $BASE_NOTE"
else
    log "making the base image: debootstrap --variant=minbase bookworm from $DEBIAN_MIRROR"
    t0=$(seconds)
    rootfs="$WORK/rootfs"
    as_root nice -n 5 debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
    security_mirror="${DEBIAN_MIRROR%/debian}/debian-security"
    as_root tee "$rootfs/etc/apt/sources.list" >/dev/null <<EOF
deb $DEBIAN_MIRROR bookworm main
deb $DEBIAN_MIRROR bookworm-updates main
deb $security_mirror bookworm-security main
EOF
    as_root rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    # This machine's trust: its CA bundle as a local CA (update-ca-certificates keeps it when the
    # Dockerfile installs ca-certificates) and pip's cert setting, as in the host's pip config.
    host_ca=/etc/ssl/certs/ca-certificates.crt
    if [ -r "$host_ca" ]; then
        as_root install -D -m 0644 "$host_ca" "$rootfs/usr/local/share/ca-certificates/host-ca-bundle.crt"
        printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' | as_root tee "$rootfs/etc/pip.conf" >/dev/null
    fi
    as_root tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' - "$BASE_TAG" >/dev/null
    as_root rm -rf "$rootfs"
    t_base=$(elapsed "$t0" "$(seconds)")
    BASE_NOTE="made in $(human "$t_base") ($t_base s: debootstrap + docker import)"
    log "base image $BASE_TAG $BASE_NOTE"
fi
BASE_OS=$(docker run --rm --network none "$BASE_TAG" sh -c '. /etc/os-release; echo "$PRETTY_NAME, Debian $(cat /etc/debian_version)"')
BASE_SIZE=$(docker image inspect -f '{{.Size}}' "$BASE_TAG")

# ---------------------------------------------------------------------------------------------
# 3. The host's local pip sources, served on 127.0.0.1 for the build

serve="$WORK/serve"
mkdir -p "$serve"
n=0
declare -A PIPARG=([find-links]="" [extra-index-url]="" [constraint]="")
add_source() { # add_source KEY VALUE: a local path or file:// URL is served, anything else passed on
    local key=$1 value=$2 path target
    case "$value" in
        file://*) path=${value#file://} ;;
        /*) path=$value ;;
        *) PIPARG[$key]="${PIPARG[$key]:+${PIPARG[$key]} }$value"; return ;;
    esac
    path=${path%/}
    [ -e "$path" ] || { log "pip $key $value: not on this machine, left out"; return; }
    n=$((n + 1))
    if [ "$key" = extra-index-url ]; then
        # A PEP 503 index links its files relative to itself (../../files/...): serve its parent.
        ln -s "$(dirname "$path")" "$serve/$n"
        target="http://127.0.0.1:PORT/$n/$(basename "$path")/"
    elif [ -d "$path" ]; then
        ln -s "$path" "$serve/$n"
        target="http://127.0.0.1:PORT/$n/"
    else
        mkdir "$serve/$n" && ln -s "$path" "$serve/$n/$(basename "$path")"
        target="http://127.0.0.1:PORT/$n/$(basename "$path")"
    fi
    PIPARG[$key]="${PIPARG[$key]:+${PIPARG[$key]} }$target"
}
if python3 -m pip --version >/dev/null 2>&1; then
    declare -A seen=()
    while IFS= read -r line; do
        key=${line#*.}
        key=${key%%=*}
        value=${line#*=}
        value=${value#\'}
        value=${value%\'}
        case "$key" in find-links | extra-index-url | constraint) ;; *) continue ;; esac
        for v in $value; do
            [ -n "${seen[$key $v]:-}" ] && continue
            seen[$key $v]=1
            add_source "$key" "$v"
        done
    done < <(python3 -m pip config list 2>/dev/null)
fi
PIP_SOURCES="none (PyPI alone)"
if [ "$n" -gt 0 ]; then
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    python3 -m http.server --bind 127.0.0.1 --directory "$serve" "$port" >"$WORK/http.log" 2>&1 &
    HTTP_PID=$!
    for _ in $(seq 30); do python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null && break; sleep 0.5; done
    for key in "${!PIPARG[@]}"; do PIPARG[$key]=${PIPARG[$key]//PORT/$port}; done
    PIP_SOURCES="the host's pip config, $n local source(s) served on 127.0.0.1:$port"
fi
for key in find-links extra-index-url constraint; do log "build arg pip $key: ${PIPARG[$key]:-(empty)}"; done

# ---------------------------------------------------------------------------------------------
# 4. The image: the same Dockerfile, on the Debian base

REVIEWER_UID=${SUDO_UID:-$(id -u)}
REVIEWER_GID=${SUDO_GID:-$(id -g)}
REVIEWER_NOTE="the invoking user"
if [ "$REVIEWER_UID" = 0 ]; then
    REVIEWER_UID=${OFFLOADBENCH_TEST_UID:-1000}
    REVIEWER_GID=${OFFLOADBENCH_TEST_GID:-$REVIEWER_UID}
    REVIEWER_NOTE="invoked as root: uid $REVIEWER_UID (the image's default user) stands in for a reviewer"
fi
uid_args=()
if [ "$REVIEWER_UID" != 1000 ] || [ "$REVIEWER_GID" != 1000 ]; then
    uid_args=(--build-arg "USER_UID=$REVIEWER_UID" --build-arg "USER_GID=$REVIEWER_GID")
fi
GIT_COMMIT=$(git rev-parse HEAD 2>/dev/null || echo "")
DIRTY=$(git status --porcelain 2>/dev/null | grep -v '^?? results/' | head -1 || true)

log "docker build (log: $WORK/build.log)"
t0=$(seconds)
set +e
cache_args=()
if [ "${DOCKER_TEST_NO_CACHE:-0}" = 1 ]; then cache_args=(--no-cache); fi
nice -n 5 docker build --network host "${cache_args[@]}" \
    --build-arg "BASE_IMAGE=$BASE_TAG" \
    --build-arg "GIT_COMMIT=$GIT_COMMIT" \
    --build-arg "PIP_FIND_LINKS=${PIPARG[find-links]}" \
    --build-arg "PIP_EXTRA_INDEX_URL=${PIPARG[extra-index-url]}" \
    --build-arg "PIP_CONSTRAINT=${PIPARG[constraint]}" \
    "${uid_args[@]}" -t "$IMAGE_TAG" . >"$WORK/build.log" 2>&1
build_rc=$?
set -e
t_build=$(elapsed "$t0" "$(seconds)")
if [ -n "$HTTP_PID" ]; then kill "$HTTP_PID" 2>/dev/null || true; wait "$HTTP_PID" 2>/dev/null || true; HTTP_PID=""; fi
cached_steps=$(grep -c -- '---> Using cache' "$WORK/build.log" || true)
total_steps=$(grep -c '^Step [0-9]' "$WORK/build.log" || true)
if [ "$build_rc" != 0 ]; then
    tail -40 "$WORK/build.log" >&2
    check "image builds" FAIL "docker build exited $build_rc after $t_build s (log: $WORK/build.log)"
    IMAGE_SIZE=0
else
    IMAGE_SIZE=$(docker image inspect -f '{{.Size}}' "$IMAGE_TAG")
    check "image builds" PASS "$(human "$t_build") ($t_build s, $cached_steps of $total_steps steps from cache)"
    if docker run --rm --network none --entrypoint sh "$BASE_TAG" -c 'command -v nvcc' >/dev/null 2>&1; then
        if grep -q "prebuilt:" "$WORK/build.log"; then
            check "CUDA ops prebuilt (nvcc in base)" PASS "DeepSpeed's CUDA ops built"
        else
            check "CUDA ops prebuilt (nvcc in base)" FAIL "no 'prebuilt:' line in the build log"
        fi
    elif grep -q "^offloadbench: skipped: no nvcc" "$WORK/build.log"; then # the step's output, not its echo
        check "CUDA-only step skipped, logged" PASS "build log: $(grep -m1 -o '^offloadbench: skipped: no nvcc[^;]*' "$WORK/build.log")"
    else
        check "CUDA-only step skipped, logged" FAIL "the build log does not say the CUDA ops step was skipped"
    fi
fi

# ---------------------------------------------------------------------------------------------
# 5. The default profile, as the README tells reviewers, then the checks

MiB() { awk -v b="$1" 'BEGIN { printf "%.0f MiB (%.2f GB)", b / 1048576, b / 1e9 }'; }
t_run=0
if [ "$build_rc" = 0 ]; then
    run_dir="$WORK/checkout"
    mkdir -p "$run_dir/results"
    chown "$REVIEWER_UID:$REVIEWER_GID" "$run_dir/results" 2>/dev/null || as_root chown "$REVIEWER_UID:$REVIEWER_GID" "$run_dir/results"
    cd "$run_dir"
    # NVMe offload mlocks its buffers: --ulimit memlock=-1 as the docs say, where the daemon may
    # raise the limit. A dockerd without CAP_SYS_RESOURCE (as in some sandboxes, and this one) may
    # not: then the plain command must refuse the NVMe run before it trains, naming the fix, and the
    # profile runs with the docs' other way, --user 0 --cap-add IPC_LOCK (the entrypoint runs the
    # workflow as the image's user with only that capability kept).
    memlock_args=(--ulimit memlock=-1)
    if ! docker run --rm --network none "${memlock_args[@]}" "$IMAGE_TAG" true >/dev/null 2>&1; then
        memlock_args=(--user 0 --cap-add IPC_LOCK)
        limit=$(docker run --rm --network none --entrypoint bash "$IMAGE_TAG" -c 'ulimit -l')
        MEMLOCK_NOTE="this daemon refuses --ulimit memlock=-1 (locked memory stays $limit KiB): ran with ${memlock_args[*]} instead (docs/docker.md)"
        log "warning: $MEMLOCK_NOTE"
        refuse="$WORK/refuse"
        mkdir -p "$refuse/results"
        chown "$REVIEWER_UID:$REVIEWER_GID" "$refuse/results" 2>/dev/null || as_root chown "$REVIEWER_UID:$REVIEWER_GID" "$refuse/results"
        set +e
        (cd "$refuse" && docker run --rm --ipc=host -v "$PWD/results:/work/results" "$IMAGE_TAG" \
            snakemake --cores all results/specs/zero3_offload_nvme.json) >"$WORK/refuse.log" 2>&1
        refuse_rc=$?
        set -e
        why=$(cat "$refuse/results/logs/resolve/zero3_offload_nvme.log" 2>/dev/null || true)
        if [ "$refuse_rc" != 0 ] && grep -q "may lock only" <<<"$why" && grep -q -- "--cap-add IPC_LOCK" <<<"$why"; then
            check "NVMe refused without the limit" PASS "exit $refuse_rc before training: $(grep -o 'locks at least [0-9,]* MiB.*(ulimit -l)' <<<"$why" | head -1)"
        else
            check "NVMe refused without the limit" FAIL "exit $refuse_rc; resolve log: '${why:0:300}' (see $WORK/refuse.log)"
        fi
        caps=$(docker run --rm --network none "${memlock_args[@]}" "$IMAGE_TAG" sh -c 'echo "$(id -u) $(awk "\$1 == \"CapEff:\" {print \$2}" /proc/self/status)"' 2>/dev/null || true)
        if [ "$caps" = "$REVIEWER_UID 0000000000004000" ]; then
            check "--user 0 runs as the image's user" PASS "uid $REVIEWER_UID with CAP_IPC_LOCK only (CapEff 0x4000)"
        else
            check "--user 0 runs as the image's user" FAIL "got '$caps', want '$REVIEWER_UID 0000000000004000'"
        fi
    fi
    log "docker run --ipc=host ${memlock_args[*]} -v \"\$PWD/results:/work/results\" $IMAGE_TAG snakemake --cores all (in $run_dir; log: $WORK/run.log)"
    t0=$(seconds)
    set +e
    docker run --rm --ipc=host "${memlock_args[@]}" -v "$PWD/results:/work/results" "$IMAGE_TAG" snakemake --cores all >"$WORK/run.log" 2>&1
    run_rc=$?
    set -e
    t_run=$(elapsed "$t0" "$(seconds)")
    if [ "$run_rc" = 0 ]; then
        check "default profile runs" PASS "snakemake --cores all exited 0 in $(human "$t_run") ($t_run s)"
    else
        tail -40 "$WORK/run.log" >&2
        check "default profile runs" FAIL "exited $run_rc after $t_run s (log: $WORK/run.log)"
    fi

    files=$(find results | wc -l)
    foreign=$(find results \( ! -uid "$REVIEWER_UID" -o ! -gid "$REVIEWER_GID" \) -printf '%u:%g %p\n' | head -5)
    if [ -z "$foreign" ] && [ "$files" -gt 1 ]; then
        check "outputs owned by the reviewer" PASS "all $files paths under results/ are $REVIEWER_UID:$REVIEWER_GID"
    else
        check "outputs owned by the reviewer" FAIL "${foreign:-no outputs} (want $REVIEWER_UID:$REVIEWER_GID)"
    fi

    set +e
    dry=$(docker run --rm --ipc=host -v "$PWD/results:/work/results" "$IMAGE_TAG" snakemake -n 2>&1)
    set -e
    if grep -q "Nothing to be done" <<<"$dry"; then
        check "every output present" PASS "snakemake -n: nothing to be done"
    else
        check "every output present" FAIL "snakemake -n: $(tail -3 <<<"$dry" | tr '\n' ' ')"
    fi

    profile=$(awk '$1 == "profile:" { print $2; exit }' "$REPO/configs/config.yaml")
    if cmp -s "$REPO/results/reference/$profile/comparison.csv" "results/reference/$profile/comparison.csv"; then
        check "reference restored into results/" PASS "results/reference/$profile/ copied from the image (the mount lacked it)"
    else
        check "reference restored into results/" FAIL "results/reference/$profile/comparison.csv missing or not the shipped one"
    fi

    verdict=$(python3 - results/compare/reference.json <<'EOF' 2>&1
import json, sys
try:
    data = json.load(open(sys.argv[1]))
except OSError as e:
    print(f"FAIL no comparison: {e}")
    sys.exit()
same = data.get("data") or {}
if same.get("differences"):
    print("FAIL not judged, the data are not the reference's: " + "; ".join(same["differences"][:3]))
    sys.exit()
rows = data.get("rows", [])
for r in rows:
    if "deviation" in r and r["deviation"] is None:
        r["deviation"] = float("inf")  # written as null
judged = [r for r in rows if "deviation" in r]
within = [r for r in judged if r["verdict"] == "within"]
bad = [r for r in rows if r.get("verdict") != "within"]
worst = max(judged, key=lambda r: r["deviation"] / r["tolerance"], default=None)
detail = f"{len(within)} of {len(judged)} metrics within tolerance"
if worst:
    detail += f"; closest to its limit: {worst['run']} {worst['metric']} {worst['deviation']:.3f} of {worst['tolerance']:g}"
if bad:
    shown = "; ".join(
        f"{r['run']} {r['metric']}: {r['verdict']}"
        + (f" {r['deviation']:.3g} > {r['tolerance']:g}" if "deviation" in r else f" ({r.get('note', '')})")
        for r in bad[:6]
    )
    print(f"FAIL {detail}; {len(bad)} not within: {shown}")
elif not judged or not data.get("available", True):
    print(f"FAIL no metric compared ({detail})")
else:
    print(f"PASS {detail}" + ("; data hashes identical to the reference's" if same.get("identical") else ""))
EOF
    )
    check "compare: within the reference" "${verdict%% *}" "${verdict#* }"

    # The entrypoint's hints, for real: no GPU (no --gpus), Docker's default 64 MiB /dev/shm
    # (no --ipc=host), a results/ folder the image's user cannot write.
    if grep -q "no GPU visible" "$WORK/run.log"; then
        check "hint: no GPU visible" PASS "printed when started without --gpus all"
    else
        check "hint: no GPU visible" FAIL "not in the run's output"
    fi
    shm=$(docker run --rm --network none "$IMAGE_TAG" true 2>&1 || true)
    shm_ok=$(docker run --rm --network none --ipc=host "$IMAGE_TAG" true 2>&1 || true)
    if grep -q "/dev/shm holds only 64 MiB" <<<"$shm" && ! grep -q "/dev/shm holds" <<<"$shm_ok"; then
        check "hint: small /dev/shm" PASS "printed at Docker's default 64 MiB, not with --ipc=host"
    else
        check "hint: small /dev/shm" FAIL "default: '${shm:0:160}'; --ipc=host: '${shm_ok:0:160}'"
    fi
    mkdir -p "$WORK/unwritable/results"
    chmod 0755 "$WORK/unwritable/results"
    chown 0:0 "$WORK/unwritable/results" 2>/dev/null || true
    set +e
    unw=$(docker run --rm --network none -v "$WORK/unwritable/results:/work/results" "$IMAGE_TAG" sh -c 'exit 3' 2>&1)
    unw_rc=$?
    set -e
    if grep -q "results/ is not writable by uid $REVIEWER_UID" <<<"$unw" && grep -q -- "--build-arg USER_UID" <<<"$unw"; then
        check "hint: unwritable results/" PASS "printed for a root-owned mount, with --build-arg USER_UID"
    else
        check "hint: unwritable results/" FAIL "'${unw:0:200}'"
    fi
    if [ "$unw_rc" = 3 ]; then
        check "exit status passed through" PASS "sh -c 'exit 3' in the container: docker run exits 3"
    else
        check "exit status passed through" FAIL "docker run exited $unw_rc, want 3"
    fi
    user=$(docker run --rm --network none "$IMAGE_TAG" id -u 2>/dev/null || true)
    if [ "$user" = "$REVIEWER_UID" ] && [ "$user" != 0 ]; then
        check "runs as the non-root user" PASS "uid $user"
    else
        check "runs as the non-root user" FAIL "uid '$user', want $REVIEWER_UID"
    fi
    versions=$(docker run --rm --network none "$IMAGE_TAG" python -c \
        'import platform, torch, deepspeed; print(f"Python {platform.python_version()}, torch {torch.__version__}, deepspeed {deepspeed.__version__}")' 2>/dev/null | tail -1 || echo "?")
    cd "$REPO"
fi

# ---------------------------------------------------------------------------------------------
# Summary

{
    echo "make docker-test: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit ${GIT_COMMIT:0:10}${DIRTY:+ (with uncommitted changes)}"
    echo "machine:      $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), no GPU used"
    echo "docker:       $DOCKER_VERSION, classic builder, build with --network host"
    echo "base image:   $BASE_TAG = $BASE_OS, $(MiB "$BASE_SIZE"); $BASE_NOTE"
    echo "pip sources:  PyPI + $PIP_SOURCES"
    echo "image build:  $(human "$t_build") ($t_build s; $cached_steps of $total_steps steps from cache)"
    echo "image size:   $(MiB "$IMAGE_SIZE") ($IMAGE_TAG${versions:+; $versions})"
    echo "default run:  $(human "$t_run") ($t_run s), docker run --ipc=host ${memlock_args[*]:-} -v \"\$PWD/results:/work/results\" $IMAGE_TAG snakemake --cores all"
    echo "reviewer:     uid $REVIEWER_UID:$REVIEWER_GID ($REVIEWER_NOTE)"
    if [ -n "$MEMLOCK_NOTE" ]; then echo "memlock:      $MEMLOCK_NOTE"; fi
    echo "checks:"
    for c in "${CHECKS[@]}"; do echo "  $c"; done
    if [ "$FAILED" = 0 ]; then echo "result:       all ${#CHECKS[@]} checks passed"; else echo "result:       FAILED"; fi
} | tee "$WORK/summary.txt"
if [ -n "$SUMMARY_FILE" ]; then
    mkdir -p "$(dirname "$SUMMARY_FILE")"
    cp "$WORK/summary.txt" "$SUMMARY_FILE"
fi
exit "$FAILED"
