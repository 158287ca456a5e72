# syntax=docker/dockerfile:1
# offloadbench: the workflow in a CUDA image.
#
#   docker build -t offloadbench .
#   docker run --gpus all --ipc=host -v "$PWD/results:/work/results" offloadbench snakemake --cores all
#   docker run --gpus all --ipc=host -e HF_TOKEN -v "$PWD/results:/work/results" -v offloadbench-hf:/cache/huggingface \
#       offloadbench snakemake --cores all --configfile configs/paper.yaml
#
# The Hugging Face token (paper profile) is given at run time only, as above or as a file mounted at
# /run/secrets/hf_token (docker/entrypoint.sh); no build step needs or sees one.
#
# Base image: CUDA 13.0 with cuDNN, the devel flavour (nvcc builds DeepSpeed's ops), Ubuntu 24.04.
# torch==2.13.0 from PyPI (requirements.lock) is the CUDA 13.0 build: its manylinux x86_64 wheel
# requires cuda-toolkit==13.0.3 and nvidia-cudnn-cu13 (the wheel's metadata on PyPI), and DeepSpeed's
# op builder refuses to compile when nvcc's major.minor differs from torch.version.cuda.
# CUDA 13 runs GPUs from Turing (compute capability 7.5) on. Digest: what Docker resolved this tag
# to in a public BuildKit log of 2026-01-30; the same digest is pinned in freinold/gliner-api's
# GPU Dockerfile and in three SGLang builder Dockerfiles (public GitHub sources).
FROM nvidia/cuda:13.0.0-cudnn-devel-ubuntu24.04@sha256:c2621d98e7de80c2aec5eb8403b19c67454c8f5b0c929e8588fd3563c9b6558d

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive

# Build tools and libraries for CPython, libaio-dev for DeepSpeed's async_io (NVMe offload), tini as
# PID 1 (docker stop and Ctrl-C reach Snakemake, which then cleans up unfinished outputs).
# Package versions are not pinned: the base image is pinned by digest, and Ubuntu's archive keeps
# only the newest build of each package, so pinned versions would break the build at the next
# security update; none of these packages enters a result.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        build-essential ca-certificates curl xz-utils pkg-config tini libaio-dev \
        libssl-dev zlib1g-dev libbz2-dev libffi-dev libsqlite3-dev liblzma-dev libreadline-dev \
        libncurses-dev libgdbm-dev uuid-dev \
 && rm -rf /var/lib/apt/lists/*

# Python 3.11.7 from python.org's source, checked against its sha256, built as pyenv builds it:
# the reference results were recorded on a pyenv CPython 3.11.7, and the offline corpora are its
# standard library (pydoc_data.topics and the modules' docstrings), which change between releases.
ARG PYTHON_VERSION=3.11.7
ARG PYTHON_SHA256=18e1aa7e66ff3a58423d59ed22815a6954e53342122c45df20c96877c062b9b7
WORKDIR /tmp/python-build
RUN curl -fsSL -o python.tar.xz "https://www.python.org/ftp/python/${PYTHON_VERSION}/Python-${PYTHON_VERSION}.tar.xz" \
 && echo "${PYTHON_SHA256}  python.tar.xz" | sha256sum -c - \
 && tar -xJf python.tar.xz --strip-components=1 \
 && ./configure --prefix=/opt/python --enable-shared LDFLAGS="-Wl,-rpath,/opt/python/lib" \
 && make -j"$(nproc)" \
 && make install \
 && rm -rf /tmp/python-build/*

# A non-root user owns the environment, the workflow and the volumes. USER_UID and USER_GID default to
# 1000, the usual first user of a Linux host, so that a bind-mounted results/ is writable; build with
# --build-arg USER_UID=$(id -u) --build-arg USER_GID=$(id -g) for another. (Not UID/GID: bash, the
# SHELL here, keeps its own read-only $UID.) Ubuntu's own uid-1000 user makes way.
ARG USER_UID=1000
ARG USER_GID=1000
RUN if id -u ubuntu >/dev/null 2>&1; then userdel --remove ubuntu || true; fi \
 && if ! getent group "${USER_GID}" >/dev/null; then groupadd --gid "${USER_GID}" offloadbench; fi \
 && useradd --uid "${USER_UID}" --gid "${USER_GID}" --create-home --shell /bin/bash offloadbench \
 && mkdir -p /opt/venv /work/src/offloadbench /work/results /cache/huggingface \
 && chown -R "${USER_UID}:${USER_GID}" /opt/venv /work /cache

COPY docker/entrypoint.sh /usr/local/bin/offloadbench-entrypoint
RUN chmod 0755 /usr/local/bin/offloadbench-entrypoint

USER ${USER_UID}:${USER_GID}
WORKDIR /work
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/cache/huggingface \
    TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0+PTX"
RUN /opt/python/bin/python3.11 -m venv /opt/venv

# The same lock as `make setup` and the tests, installed the same way: pip, then torch alone (on
# Linux, PyPI's torch==2.13.0 is the CUDA 13.0 build), then the whole lock.
COPY --chown=${USER_UID}:${USER_GID} requirements.lock ./
RUN pip install pip==26.3 \
 && pip install "$(grep '^torch==' requirements.lock)" \
 && pip install -r requirements.lock

# DeepSpeed's ops built ahead of time for CUDA (DS_ACCELERATOR=cuda: no GPU is visible while an image
# builds): cpu_adam (ZeRO-Offload's optimizer) and async_io (NVMe offload; pin_memory comes with it),
# for Ampere (8.0, 8.6), Ada (8.9) and Hopper (9.0, + PTX for newer GPUs). The lock's deepspeed
# (an sdist) is rebuilt in place, against the installed torch.
RUN DS_ACCELERATOR=cuda DS_BUILD_CPU_ADAM=1 DS_BUILD_AIO=1 DS_ENABLE_NINJA=1 \
    pip install --no-cache-dir --no-build-isolation --no-deps --force-reinstall "$(grep '^deepspeed==' requirements.lock)" \
 && DS_ACCELERATOR=cuda python -c "from deepspeed.git_version_info import installed_ops as ops, accelerator_name as acc; \
assert acc == 'cuda' and ops['cpu_adam'] and ops['async_io'], (acc, ops); print('prebuilt:', [k for k, v in ops.items() if v])" \
 && DS_ACCELERATOR=cuda ds_report

# The CPU accelerator's variants of the same ops (cpu_adam, shm_comm, async_io), for containers
# started without a GPU: built by the project's own step (`make setup` runs it too) into
# /opt/venv/torch_extensions. Only the three modules it needs are copied first, so that editing the
# rest of src/ does not rebuild the ops.
COPY --chown=${USER_UID}:${USER_GID} src/offloadbench/__init__.py src/offloadbench/env.py src/offloadbench/ops.py ./src/offloadbench/
RUN DS_ACCELERATOR=cpu PYTHONPATH=/work/src python -m offloadbench.ops

# The project, editable as in `make setup` (offloadbench.config finds configs/ and workflow/ beside src/).
COPY --chown=${USER_UID}:${USER_GID} pyproject.toml README.md ./
COPY --chown=${USER_UID}:${USER_GID} src ./src
RUN pip install --no-deps -e .

COPY --chown=${USER_UID}:${USER_GID} Snakefile ./
COPY --chown=${USER_UID}:${USER_GID} workflow ./workflow
COPY --chown=${USER_UID}:${USER_GID} configs ./configs
COPY --chown=${USER_UID}:${USER_GID} benchmarks ./benchmarks
COPY --chown=${USER_UID}:${USER_GID} results/README.md ./results/README.md
COPY --chown=${USER_UID}:${USER_GID} results/reference ./results/reference
# A second copy outside the results volume: the entrypoint restores it into a mounted results/
# that lacks it, so the compare step always finds the shipped reference.
COPY --chown=${USER_UID}:${USER_GID} results/reference /opt/offloadbench/reference
# The commit the image was built from, for each run's provenance (.git is not in the build context):
#   docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD) -t offloadbench .
ARG GIT_COMMIT=""
ENV OFFLOADBENCH_GIT_COMMIT=${GIT_COMMIT}

# Outputs and the Hugging Face cache (models and data sets of the paper profile) live in volumes.
VOLUME ["/work/results", "/cache/huggingface"]

ENTRYPOINT ["tini", "--", "offloadbench-entrypoint"]
CMD ["snakemake", "--cores", "all"]
