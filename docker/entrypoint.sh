#!/usr/bin/env bash
# Entrypoint of the offloadbench image: a few hints on stderr, then the command given runs as is
# (exec: its exit status is the container's, and signals reach it).
#
#   docker run --gpus all --ipc=host --ulimit memlock=-1 -v "$PWD/results:/work/results" offloadbench snakemake --cores all
#
# - No GPU visible: say so. The default profile still runs on the CPU; the paper profile
#   (configs/paper.yaml) and benchmarks/gpu_check.py need a CUDA GPU.
# - A Hugging Face token only ever comes at run time: `-e HF_TOKEN` passes it from the host's
#   environment, or a file mounted at /run/secrets/hf_token (a Docker secret, or
#   `-v "$HOME/.cache/huggingface/token:/run/secrets/hf_token:ro"`) is handed to huggingface_hub as
#   HF_TOKEN_PATH. The token's value is never read, expanded or printed here.
# - A small /dev/shm (Docker's default is 64 MiB): suggest --ipc=host.
# - A small locked-memory limit (ulimit -l): suggest --ulimit memlock=-1 (NVMe offload pins buffers).
# - Started as root (--user 0): the command runs as the image's own user instead (the owner of
#   working directory, /work), so outputs never belong to root; where the container has CAP_IPC_LOCK
#   (--cap-add IPC_LOCK) that one capability is kept, so NVMe offload may lock its buffers on a
#   daemon that cannot raise the locked-memory limit (rootless or restricted Docker).
# - results/ not writable by this user: say how to fix it.
# - results/reference/ missing (results/ mounted from outside a clone): copied from the image.
set -euo pipefail

if [ "$#" -eq 0 ]; then
    set -- snakemake --cores all
fi

if [ "$(id -u)" = 0 ]; then
    uid="$(stat -c %u . 2>/dev/null || echo 0)" gid="$(stat -c %g . 2>/dev/null || echo 0)"
    home="$(getent passwd "$uid" | cut -d: -f6)"
    bounding="$(awk '$1 == "CapBnd:" { print $2 }' /proc/self/status)"
    keep=()
    if [ -n "$bounding" ] && (( (0x$bounding >> 14) & 1 )); then # CAP_IPC_LOCK
        keep=(--inh-caps=+ipc_lock --ambient-caps=+ipc_lock)
    fi
    if [ "$uid" != 0 ]; then
        exec setpriv --reuid="$uid" --regid="$gid" --clear-groups "${keep[@]}" -- \
            env HOME="${home:-/work}" USER="$(id -nu "$uid" 2>/dev/null || echo "$uid")" "$0" "$@"
    fi
fi

if ! gpus="$(nvidia-smi -L 2>/dev/null)" || [ -z "$gpus" ]; then
    echo "offloadbench: no GPU visible in this container: add --gpus all to docker run (needs the NVIDIA" \
        "Container Toolkit on the host). The default profile still runs on the CPU; configs/paper.yaml and" \
        "benchmarks/gpu_check.py need a CUDA GPU." >&2
fi

shm_kib="$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $2 }' || true)"
if [ -n "$shm_kib" ] && [ "$shm_kib" -lt 1048576 ]; then
    echo "offloadbench: /dev/shm holds only $((shm_kib / 1024)) MiB: add --ipc=host (or --shm-size=8g) to docker run" \
        "for pinned host memory and multi-process runs." >&2
fi

# Locked memory: DeepSpeed's async_io pins its NVMe buffers with mlock, and a container's default
# limit (often 8 MiB or 64 KiB) makes the NVMe offload run abort (make docker-test saw it).
memlock_kib="$(ulimit -l 2>/dev/null || true)"
if [ -n "$memlock_kib" ] && [ "$memlock_kib" != unlimited ] && [ "$memlock_kib" -lt 1048576 ]; then
    cap_eff="$(awk '$1 == "CapEff:" { print $2 }' /proc/self/status)"
    if [ -z "$cap_eff" ] || ! (( (0x$cap_eff >> 14) & 1 )); then
        echo "offloadbench: locked memory is limited to ${memlock_kib} KiB (ulimit -l): add --ulimit memlock=-1 to docker run" \
            "(or, where the daemon refuses it, --user 0 --cap-add IPC_LOCK), or NVMe offload runs are refused:" \
            "DeepSpeed locks their swap buffers." >&2
    fi
fi

token_file="${OFFLOADBENCH_TOKEN_FILE:-/run/secrets/hf_token}"
if [ -z "${HF_TOKEN:+set}" ] && [ -z "${HF_TOKEN_PATH:+set}" ] && [ -r "$token_file" ]; then
    export HF_TOKEN_PATH="$token_file"
fi

if [ -d results ] && [ ! -w results ]; then
    echo "offloadbench: results/ is not writable by uid $(id -u): build the image with" \
        "--build-arg USER_UID=\$(id -u) --build-arg USER_GID=\$(id -g), or make the mounted folder writable." >&2
fi

# A results/ folder mounted from outside the repository hides the shipped reference results that
# the compare step reads: put the image's copy back (never over an existing one).
if [ -d /opt/offloadbench/reference ] && [ -w results ] && [ ! -e results/reference ]; then
    cp -r /opt/offloadbench/reference results/reference
fi

exec "$@"
