#!/usr/bin/env bash
# make slurm-test: the tiny profile (tests/configs/tiny.yaml) through workflow/profiles/slurm on a
# real Slurm, and the same profile locally, with the results compared.
#
#   make slurm-test                     # or: bash tools/slurm_test.sh
#   make slurm-test ARGS=--two-nodes    # instead: a world-size-2 ZeRO-3 CPU-offload run over two slurmd
#
# 1. Slurm: where one answers (sinfo), it is used as it is. Otherwise Debian's slurm-wlm and munge
#    come from apt when missing, and a one-node cluster is started in a temporary folder: munged with
#    its own key and socket, slurmctld and slurmd on this machine's CPUs (select/cons_tres, no
#    accounting, proctrack/linuxproc, task/none). Its slurm.conf is also put at Slurm's default path,
#    /etc/slurm/slurm.conf (refused if a file is there), and removed afterwards: the plugin's job
#    step drops SLURM_CONF from the environment of the srun that starts each job's command.
# 2. The tiny profile runs in a scratch folder through the profile, with only the overrides
#    docs/cluster.md tells a user of a small CPU cluster (the CPUs of a node, and the memory of every
#    rule):
#      snakemake --profile workflow/profiles/slurm --cores <CPUs of a node> \
#        --set-resources train:mem_mb=4000 evaluate_base:mem_mb=4000 pretrain:mem_mb=4000
# 3. The same profile runs locally (snakemake --cores <the same>) in a second scratch folder.
# 4. Checks: both runs finished; every output of the workflow exists in both; the loss of every run
#    at every logged step (results/runs/<run>/metrics.jsonl, and pretraining's) and the eval losses
#    are equal; the tables have a row for every run; the claims have the same verdicts; no training
#    job asked Slurm for a GPU.
# 5. --two-nodes (instead of 2.-4.): two slurmd in network namespaces (veth links to a bridge, each
#    its own hostname), one CPU each, and one run with world_size 2, num_nodes 2 (ZeRO-3 CPU offload)
#    through the profile: srun + offloadbench.launch + torchrun's c10d rendezvous across the two.
#
# Prints the job count, the wall times and the comparison; exits non-zero on any mismatch or
# failure (a failed run's log tail is printed). Whatever it started (daemons, namespaces, the
# temporary folder with both runs) is stopped and removed on exit, also on failure or Ctrl-C.
# Environment: BIN (the environment's bin folder, default .venv/bin), SLURM_TEST_CORES (threads of
# each job in both runs; default this machine's CPUs, or the smallest node's of an existing
# cluster), SLURM_TEST_KEEP=1 (keep the temporary folder).
# Needs root or password-less sudo only to install packages and start daemons. Not in .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
BIN=${BIN:-$REPO/.venv/bin}
export PATH="$BIN:$PATH"
# This checkout's package, also where the environment's editable install points at another one.
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"

TWO_NODES=0
for arg in "$@"; do
    case "$arg" in
        --two-nodes) TWO_NODES=1 ;;
        -h | --help) sed -n '2,32p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
    esac
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/offloadbench-slurm-test.XXXXXX")
chmod 0755 "$WORK"
declare -a STARTED=() NETNS=() LINKS=()
FAILED=0
SUMMARY=()

log() { printf '[slurm-test %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
note() { SUMMARY+=("$*"); }
check() { # check NAME PASS|FAIL DETAIL
    SUMMARY+=("$(printf '  %-4s %-34s %s' "$2" "$1" "$3")")
    if [ "$2" != PASS ]; then FAILED=1; fi
    log "$2 $1: $3"
}
seconds() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", b - a }'; }
human() { awk -v s="$1" 'BEGIN { printf "%d min %02d s", s / 60, s % 60 }'; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif sudo -n true 2>/dev/null; then sudo "$@"
    else log "error: '$*' needs root (or password-less sudo)"; exit 1
    fi
}

# shellcheck disable=SC2317  # called through the trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "${SLURM_CONF_OURS:-}" ]; then
        # Jobs of our own cluster only: nothing else can submit to it.
        scancel --full --quiet $(squeue -h -o %i 2>/dev/null) 2>/dev/null || true
        for _ in $(seq 30); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 1; done
    fi
    local i
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do # the daemons, last started first
        local name=${STARTED[i]%%:*} pid=${STARTED[i]#*:}
        as_root kill "$pid" 2>/dev/null || true
        for _ in $(seq 20); do as_root kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        log "stopped $name (pid $pid)"
    done
    if [ -n "${INSTALLED_CONF:-}" ]; then as_root rm -f "$INSTALLED_CONF"; fi
    for link in "${LINKS[@]}"; do as_root ip link del "$link" 2>/dev/null || true; done
    for ns in "${NETNS[@]}"; do as_root ip netns del "$ns" 2>/dev/null || true; done
    if [ "${SLURM_TEST_KEEP:-0}" = 1 ]; then
        log "logs and results kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_daemon() { # start_daemon NAME COMMAND...: a daemon in its foreground mode, in the background
    local name=$1
    shift
    if [ "$(id -u)" = 0 ]; then "$@" >"$WORK/log/$name.out" 2>&1 &
    else sudo -n "$@" >"$WORK/log/$name.out" 2>&1 &
    fi
    STARTED+=("$name:$!") # the daemon itself (or the sudo that relays signals to it)
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2
    shift 2
    for _ in $(seq "$((limit * 2))"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
    log "error: $what did not happen within $limit s"
    tail -n 20 "$WORK"/log/*.log "$WORK"/log/*.out >&2 2>/dev/null || true
    exit 1
}

mkdir -p "$WORK/log"
[ -x "$BIN/snakemake" ] || { log "error: no $BIN/snakemake: run make setup, or pass BIN=<environment>/bin"; exit 2; }
NCPU=$(nproc)
CORES=${SLURM_TEST_CORES:-$NCPU}

# ---------------------------------------------------------------------------------------------
# 1. Slurm

slurm_conf() { # slurm_conf NODE-LINES...: a minimal cluster in $WORK/slurm
    local dir=$WORK/slurm
    cat <<EOF
# offloadbench make slurm-test: a throw-away cluster (tools/slurm_test.sh)
ClusterName=offloadbench-test
SlurmctldHost=$(hostname -s)($CTLD_ADDR)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$(id -un)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd-%n.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
MinJobAge=300
$(printf '%s\n' "$@")
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

free_port() { python -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'; }

SLURM_NOTE=""
if timeout 10 sinfo -h >/dev/null 2>&1; then
    SLURM_NOTE="an existing cluster ($(sinfo -h -o '%P %D nodes %c CPUs' | head -1), SLURM_CONF=${SLURM_CONF:-default})"
    log "using $SLURM_NOTE"
    node_cpus=$(sinfo -h -N -o %c | sort -n | head -1)
    CORES=${SLURM_TEST_CORES:-$((node_cpus < NCPU ? node_cpus : NCPU))}
    [ "$TWO_NODES" = 0 ] || { log "error: --two-nodes starts its own cluster; stop the running one or leave it out"; exit 2; }
else
    missing=()
    command -v slurmctld >/dev/null || missing+=(slurm-wlm)
    command -v munged >/dev/null || missing+=(munge)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]} with apt"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >"$WORK/log/apt.log"
    fi
    mkdir -p "$WORK/slurm/state" "$WORK/slurm/spool"
    t0=$(seconds)
    CTLD_PORT=$(free_port) SLURMD_PORT=$(free_port)
    mem_mb=$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
    if [ "$TWO_NODES" = 1 ]; then
        # Two nodes of one CPU each, each in its own network namespace behind a bridge.
        CTLD_ADDR=10.77.0.254
        as_root ip link add obslurm0 type bridge
        LINKS+=(obslurm0)
        as_root ip addr add "$CTLD_ADDR/24" dev obslurm0
        as_root ip link set obslurm0 up
        hosts="127.0.0.1 localhost"$'\n'"$CTLD_ADDR $(hostname -s)"$'\n'"10.77.0.1 obn1"$'\n'"10.77.0.2 obn2"
        for n in 1 2; do
            ns=obslurm-n$n
            as_root ip netns add "$ns"
            NETNS+=("$ns")
            as_root ip link add "obv$n" type veth peer name eth0 netns "$ns"
            LINKS+=("obv$n")
            as_root ip link set "obv$n" master obslurm0 up
            as_root ip netns exec "$ns" ip addr add "10.77.0.$n/24" dev eth0
            as_root ip netns exec "$ns" ip link set eth0 up
            as_root ip netns exec "$ns" ip link set lo up
            mkdir -p "$WORK/slurm/spool/obn$n"
        done
        printf '%s\n' "$hosts" >"$WORK/slurm/hosts" # each node's /etc/hosts (bound in its mount namespace)
        node_mem=$((mem_mb / 2))
        slurm_conf "NodeName=obn1 NodeAddr=10.77.0.1 CPUs=1 RealMemory=$node_mem State=UNKNOWN" \
            "NodeName=obn2 NodeAddr=10.77.0.2 CPUs=1 RealMemory=$node_mem State=UNKNOWN" >"$WORK/slurm/slurm.conf"
        CORES=1
    else
        CTLD_ADDR=127.0.0.1
        slurm_conf "NodeName=$(hostname -s) NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$mem_mb State=UNKNOWN" \
            >"$WORK/slurm/slurm.conf"
        mkdir -p "$WORK/slurm/spool/$(hostname -s)"
    fi
    # At Slurm's default path too: the plugin's job step drops SLURM_* from the environment of the
    # job's command (SLURM_CONF included), so an srun inside a job only finds the default file.
    if [ -e /etc/slurm/slurm.conf ]; then
        log "error: /etc/slurm/slurm.conf exists but no Slurm answers; fix or move it, then rerun"
        exit 1
    fi
    as_root install -D -m 0644 "$WORK/slurm/slurm.conf" /etc/slurm/slurm.conf
    INSTALLED_CONF=/etc/slurm/slurm.conf
    export SLURM_CONF=/etc/slurm/slurm.conf
    SLURM_CONF_OURS=1
    dd if=/dev/urandom of="$WORK/slurm/munge.key" bs=1024 count=1 status=none
    chmod 0600 "$WORK/slurm/munge.key"
    start_daemon munged munged --foreground --force --socket="$WORK/slurm/munge.socket" \
        --key-file="$WORK/slurm/munge.key" --log-file="$WORK/log/munged.log" \
        --pid-file="$WORK/slurm/munged.pid" --seed-file="$WORK/slurm/munged.seed"
    wait_for 20 "munged answering" sh -c "munge -S '$WORK/slurm/munge.socket' -n | unmunge -S '$WORK/slurm/munge.socket'"
    start_daemon slurmctld slurmctld -D -f "$SLURM_CONF"
    wait_for 30 "slurmctld answering" scontrol ping
    if [ "$TWO_NODES" = 1 ]; then
        for n in 1 2; do
            # nsenter, not ip netns exec: that one mounts a fresh /sys, without the cgroup file
            # systems slurmd needs. Own hostname and /etc/hosts: torchrun and gloo resolve obn1/obn2.
            start_daemon "slurmd-obn$n" nsenter --net="/run/netns/obslurm-n$n" unshare --uts --mount \
                sh -c "mount --bind '$WORK/slurm/hosts' /etc/hosts && hostname obn$n && exec slurmd -D -N obn$n -f '$SLURM_CONF'"
        done
    else
        start_daemon slurmd slurmd -D -N "$(hostname -s)" -f "$SLURM_CONF"
    fi
    wait_for 60 "every node idle" sh -c '[ -z "$(sinfo -h -N -o %t | grep -v "^idle")" ] && [ -n "$(sinfo -h -N -o %t)" ]'
    t_up=$(elapsed "$t0" "$(seconds)")
    SLURM_NOTE="started here in $t_up s: $(slurmctld -V), $(sinfo -h -N -o '%N %c CPUs %m MB' | paste -sd ';' -), no accounting"
    log "Slurm $SLURM_NOTE"
fi

# ---------------------------------------------------------------------------------------------
# 2.-3. The tiny profile through Slurm and locally

SMK=("$BIN/snakemake" -s "$REPO/Snakefile")
# The overrides docs/cluster.md gives for a small CPU cluster, and nothing else.
SLURM_ARGS=(--profile "$REPO/workflow/profiles/slurm" --cores "$CORES"
    --set-resources train:mem_mb=4000 evaluate_base:mem_mb=4000 pretrain:mem_mb=4000)
TINY=$REPO/tests/configs/tiny.yaml

run_workflow() { # run_workflow NAME DIR ARGS...: wall seconds in $WALL, log in $WORK/log/NAME.log
    local name=$1 dir=$2
    shift 2
    mkdir -p "$dir"
    log "$name: ${*//$REPO/.} (log: $WORK/log/$name.log)"
    local t0 rc=0
    t0=$(seconds)
    (cd "$dir" && nice -n 10 "${SMK[@]}" --directory "$dir" "$@") >"$WORK/log/$name.log" 2>&1 || rc=$?
    WALL=$(elapsed "$t0" "$(seconds)")
    if [ "$rc" != 0 ]; then
        log "$name exited $rc after $WALL s; its log ends:"
        tail -n 40 "$WORK/log/$name.log" >&2
    fi
    return "$rc"
}

count_jobs() { # count_jobs LOG: Slurm jobs submitted (by rule), rules run locally, remote resources
    SUBMITTED=$(grep -c "has been submitted with SLURM jobid" "$1" || true)
    LOCAL_RULES=$(grep -oE "^localrule [a-z_]+" "$1" | awk '{ print $2 }' | sort | uniq -c |
        awk '{ printf "%s%s x%d", sep, $2, $1; sep=", " }')
    # Each job's block: "rule NAME:" ... "jobid: N" ... "resources: ..."; then "Job N has been submitted".
    REMOTE_RULES=$(awk '
        /^(local)?rule [a-z_]+:/ { rule = $2; sub(":", "", rule); local = ($1 == "localrule") }
        /^ +jobid: / { id[$2] = rule }
        /^ +resources: / && !local { res[rule] = $0 }
        /has been submitted with SLURM jobid/ { n[id[$2]]++ }
        END { for (r in n) printf "%s x%d\n", r, n[r] }' "$1" | sort | paste -sd, - | sed 's/,/, /g')
    REMOTE_RESOURCES=$(awk '
        /^(local)?rule [a-z_]+:/ { rule = $2; sub(":", "", rule); local = ($1 == "localrule") }
        /^ +resources: / && !local { sub(/^ +resources: /, ""); gsub(/tmpdir=[^,]*, |disk[a-z_]*=[^,]*, |mem=[^,]*, |mem_mib=[^,]*, /, ""); res[rule] = $0 }
        END { for (r in res) printf "%s: %s\n", r, res[r] }' "$1" | sort)
}

if [ "$TWO_NODES" = 0 ]; then
    if run_workflow slurm "$WORK/slurm-run" "${SLURM_ARGS[@]}" --configfile "$TINY"; then rc_slurm=0; else rc_slurm=$?; fi
    T_SLURM=$WALL
    count_jobs "$WORK/log/slurm.log"
    check "tiny profile through Slurm" "$([ "$rc_slurm" = 0 ] && echo PASS || echo FAIL)" \
        "exit $rc_slurm, $(human "$T_SLURM") ($T_SLURM s), $SUBMITTED Slurm jobs"
    note "slurm jobs:   $SUBMITTED submitted ($REMOTE_RULES)"
    note "local rules:  $LOCAL_RULES (localrules: run where Snakemake runs, not queued)"
    note "resources:    (per node, as the plugin turns them into sbatch options)"
    while read -r line; do note "  $line"; done <<<"$REMOTE_RESOURCES"
    gpu_asks=$(grep -cE "(: |, )(gpu|gres)=" <<<"$REMOTE_RESOURCES" || true)
    allocations=""
    if [ -n "${SLURM_CONF_OURS:-}" ]; then
        allocations=$(grep -oE "sched: Allocate JobId=[0-9]+ NodeList=[^ ]+ #CPUs=[0-9]+" "$WORK/log/slurmctld.log" |
            awk '{ print $NF }' | sort | uniq -c | awk '{ printf "%s%d jobs %s", sep, $1, $2; sep=", " }')
    fi
    check "no GPU asked for" "$([ "$gpu_asks" = 0 ] && echo PASS || echo FAIL)" \
        "no gpu or gres resource on any submitted job${allocations:+; slurmctld allocated: $allocations}"

    rc_local=1 T_LOCAL=0
    if [ "$rc_slurm" = 0 ]; then
        if run_workflow local "$WORK/local-run" --cores "$CORES" --configfile "$TINY"; then rc_local=0; else rc_local=$?; fi
        T_LOCAL=$WALL
        check "tiny profile locally" "$([ "$rc_local" = 0 ] && echo PASS || echo FAIL)" \
            "exit $rc_local, $(human "$T_LOCAL") ($T_LOCAL s), snakemake --cores $CORES"
    else
        check "tiny profile locally" FAIL "not run: the Slurm run failed"
    fi

    # ---------------------------------------------------------------------------------------------
    # 4. The comparison
    if [ "$rc_slurm" = 0 ] && [ "$rc_local" = 0 ]; then
        rc_cmp=0
        python "$REPO/tools/slurm_compare.py" "$WORK/slurm-run" "$WORK/local-run" --config "$TINY" \
            >"$WORK/log/compare.out" 2>"$WORK/log/compare.err" || rc_cmp=$?
        while IFS=$'\t' read -r status name detail; do
            check "$name" "$status" "$detail"
        done < <(grep -E $'^(PASS|FAIL)\t' "$WORK/log/compare.out")
        if [ "$rc_cmp" != 0 ] && ! grep -q $'^FAIL\t' "$WORK/log/compare.out"; then
            check "results compared" FAIL "tools/slurm_compare.py exited $rc_cmp: $(tail -n 3 "$WORK/log/compare.err")"
        fi
    else
        check "results compared" FAIL "a run failed; nothing to compare"
    fi
    note "wall time:    Slurm $(human "$T_SLURM") ($T_SLURM s), local $(human "$T_LOCAL") ($T_LOCAL s), ratio $(awk -v a="$T_SLURM" -v b="$T_LOCAL" 'BEGIN { printf "%.2f", b ? a / b : 0 }')"
fi

# ---------------------------------------------------------------------------------------------
# 5. Two nodes

if [ "$TWO_NODES" = 1 ]; then
    cat >"$WORK/two-nodes.yaml" <<EOF
# One ZeRO-3 CPU-offload run over the two slurmd (world_size 2, num_nodes 2), merged onto the tiny profile.
baseline_run: zero3_offload_cpu_2n
runs:
  - name: zero3_offload_cpu_2n
    method: full
    deepspeed: configs/deepspeed/zero3_offload_cpu.json
    world_size: 2
    num_nodes: 2
EOF
    target=results/runs/zero3_offload_cpu_2n/summary.json
    if run_workflow two-nodes "$WORK/two-nodes-run" "$target" "${SLURM_ARGS[@]}" --configfile "$TINY" "$WORK/two-nodes.yaml"; then rc=0; else rc=$?; fi
    T_TWO=$WALL
    count_jobs "$WORK/log/two-nodes.log"
    detail="exit $rc, $(human "$T_TWO") ($T_TWO s), $SUBMITTED Slurm jobs"
    if [ "$rc" = 0 ]; then
        detail+="; $(python - "$WORK/two-nodes-run/$target" "$WORK/two-nodes-run/results/logs/train/zero3_offload_cpu_2n.log" <<'EOF'
import json
import re
import sys

s = json.load(open(sys.argv[1]))
log = open(sys.argv[2]).read()
rdzv = sorted(set(re.findall(r"--rdzv_endpoint=(\S+)", log)))
hosts = sorted({r.get("host", "?") for r in s.get("ranks", [])})
print(f"status {s['status']}, world size {s.get('world_size')}, rendezvous {', '.join(rdzv) or '?'},"
      f" rank hosts {', '.join(hosts)}, final train loss {s.get('train_loss_final')}, eval loss {s.get('eval_loss')}")
EOF
)"
        status=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["status"])' "$WORK/two-nodes-run/$target")
        [ "$status" = ok ] || rc=1
    fi
    check "two nodes: ws 2 ZeRO-3 offload" "$([ "$rc" = 0 ] && echo PASS || echo FAIL)" "$detail"
fi

# ---------------------------------------------------------------------------------------------
# Summary

cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
mem_gib=$(awk '/MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)
{
    echo "make slurm-test$([ "$TWO_NODES" = 1 ] && echo " ARGS=--two-nodes"): $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "$REPO" rev-parse --short=10 HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo " with uncommitted changes")"
    echo "machine:      $NCPU cores, $mem_gib GiB, $cpu, no GPU"
    echo "slurm:        $SLURM_NOTE"
    echo "profile:      tests/configs/tiny.yaml (accelerator: none) through workflow/profiles/slurm"
    echo "overrides:    ${SLURM_ARGS[*]//$REPO\//}" | sed 's/--profile workflow\/profiles\/slurm //'
    printf '%s\n' "${SUMMARY[@]}"
    echo "result:       $([ "$FAILED" = 0 ] && echo PASSED || echo FAILED)"
}
exit "$FAILED"
