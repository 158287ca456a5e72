#!/usr/bin/env bash
# Wheels for running benchmarks/gpu_check.py on a CUDA machine that has torch, transformers, peft
# and accelerate but not the rest, and no network: the lock's bitsandbytes, deepspeed and datasets
# plus what they need beyond such a machine, for CPython 3.12 on x86-64 Linux (PYTHON_VERSION to
# change it). Writes them to .gpu-wheels/ (ignored by git), checks the total against 64 MiB and
# prints it.
#
#   bash benchmarks/gpu_wheels.sh            # needs pip and PyPI, here
#   # there (the folder carried along):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu-wheels/*.whl
#   for f in .gpu-wheels/*.deb; do dpkg -x "$f" /tmp/aio; done       # only where libaio-dev is missing
#   export CPATH=/tmp/aio/usr/include LIBRARY_PATH=/tmp/aio/usr/lib/x86_64-linux-gnu \
#       LD_LIBRARY_PATH=/tmp/aio/usr/lib/x86_64-linux-gnu
#   PYTHONPATH=/tmp/site python3 benchmarks/gpu_check.py --out "$OUT/gpu_check.json"
#
# deepspeed is published as an sdist only: its wheel is built here, without ops (they are compiled
# just in time there, by gpu_check's first check, with that machine's nvcc). pyarrow (~40 MB) is not
# carried: bitsandbytes alone is ~43 MB, so datasets uses the machine's own pyarrow (>= 24 needed).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT_DIR="${GPU_WHEELS_DIR:-.gpu-wheels}"
PYTHON_VERSION="${PYTHON_VERSION:-3.12}"
LIMIT_BYTES=$((64 * 1024 * 1024))
PIP=(python3 -m pip)
[ -x .venv/bin/python ] && PIP=(.venv/bin/python -m pip)

# The locked version of each package: one version per wheel, the same as requirements.lock.
LOCKED=(bitsandbytes datasets dill multiprocess pydantic pydantic_core annotated-types typing-inspection
    typing_extensions hjson fsspec)
pins=()
for name in "${LOCKED[@]}"; do
    pin="$(grep -i "^${name}==" requirements.lock)" || { echo "gpu_wheels: ${name} is not in requirements.lock" >&2; exit 1; }
    pins+=("$pin")
done
deepspeed="$(grep '^deepspeed==' requirements.lock)"

# Only a folder this script made (it holds the marker) is emptied; a user's folder never is.
MARKER="$OUT_DIR/.offloadbench-gpu-wheels"
if [ -d "$OUT_DIR" ] && [ ! -e "$MARKER" ] && [ -n "$(ls -A "$OUT_DIR")" ]; then
    echo "gpu_wheels: $OUT_DIR exists, is not empty and was not made by this script; set GPU_WHEELS_DIR to a new folder" >&2
    exit 1
fi
rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR"
touch "$MARKER"
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
    manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
"${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
    "${platforms[@]}" -d "$OUT_DIR" "${pins[@]}"
# A pure-Python wheel of deepspeed (no ops, no torch needed to build it).
"${PIP[@]}" wheel -q --no-deps --no-binary deepspeed -w "$OUT_DIR" "$deepspeed"

# libaio (runtime and headers) for DeepSpeed's async_io, should that machine lack libaio-dev: Debian
# packages (~40 KB), unpacked there into a folder of their own (see gpu_check.py's docstring).
if command -v apt-get >/dev/null 2>&1; then
    for pkg in libaio1 libaio-dev; do
        (cd "$OUT_DIR" && apt-get download -q "$pkg" >/dev/null) || echo "gpu_wheels: no $pkg package here" >&2
    done
fi

total=$(find "$OUT_DIR" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
ls -l "$OUT_DIR"
count=$(find "$OUT_DIR" -type f | wc -l)
awk -v n="$count" -v t="$total" -v d="$OUT_DIR" \
    'BEGIN { printf "gpu_wheels: %d files, %d bytes (%.1f MiB) in %s; limit 64 MiB\n", n, t, t / 1048576, d }' 
if [ "$total" -gt "$LIMIT_BYTES" ]; then
    echo "gpu_wheels: over 64 MiB: the bundle would not travel" >&2
    exit 1
fi
