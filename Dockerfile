# syntax=docker/dockerfile:1
# offloadbench: the workflow in a CUDA image.
#
#   docker build -t offloadbench .
#   docker run --gpus all --ipc=host --ulimit memlock=-1 -v "$PWD/results:/work/results" offloadbench snakemake --cores all
#   docker run --gpus all --ipc=host --ulimit memlock=-1 -e HF_TOKEN -v "$PWD/results:/work/results" -v offloadbench-hf:/cache/huggingface \
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
# BASE_IMAGE may name another Debian-family image with apt: `make docker-test` (tools/docker_test.sh)
# builds this same file on a plain Debian bookworm made with debootstrap, where the CUDA-only step
# below is skipped and says so in the build log.
ARG BASE_IMAGE=nvidia/cuda:13.0.0-cudnn-devel-ubuntu24.04@sha256:c2621d98e7de80c2aec5eb8403b19c67454c8f5b0c929e8588fd3563c9b6558d
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive

# Everything comes from the base's package archive or from PyPI, nothing else is downloaded.
# Python is the base's own (Ubuntu 24.04: 3.12; Debian bookworm: 3.11), with venv and the headers
# that DeepSpeed's C++ ops compile against; build-essential compiles them, libaio-dev is for
# DeepSpeed's async_io (NVMe offload), tini is PID 1 (docker stop and Ctrl-C reach Snakemake, which
# then cleans up unfinished outputs). The corpora are text shipped in src/offloadbench/corpora, so
# the interpreter's release does not enter the data.
# Package versions are not pinned: the base image is pinned by digest, and Ubuntu's archive keeps
# only the newest build of each package, so pinned versions would break the build at the next
# security update; none of these packages enters a result.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        build-essential ca-certificates tini libaio-dev \
        python3 python3-venv python3-dev \
 && rm -rf /var/lib/apt/lists/*

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
RUN python3 -m venv /opt/venv

# The same lock as `make setup` and the tests, installed the same way: pip, then torch alone (on
# Linux, PyPI's torch==2.13.0 is the CUDA 13.0 build), then the whole lock.
# PIP_FIND_LINKS, PIP_EXTRA_INDEX_URL and PIP_CONSTRAINT are pip's own settings, empty (PyPI alone)
# unless given with --build-arg: a local wheel house or index mirror of the same pinned releases, as
# `make docker-test` passes to give the build this machine's CPU build of torch.
ARG PIP_FIND_LINKS=""
ARG PIP_EXTRA_INDEX_URL=""
ARG PIP_CONSTRAINT=""
COPY --chown=${USER_UID}:${USER_GID} requirements.lock ./
RUN pip install pip==26.3 \
 && pip install "$(grep '^torch==' requirements.lock)" \
 && pip install -r requirements.lock

# DeepSpeed's ops built ahead of time for CUDA (DS_ACCELERATOR=cuda: no GPU is visible while an image
# builds): cpu_adam (ZeRO-Offload's optimizer) and async_io (NVMe offload; pin_memory comes with it),
# for Ampere (8.0, 8.6), Ada (8.9) and Hopper (9.0, + PTX for newer GPUs). The lock's deepspeed
# (an sdist) is rebuilt in place, against the installed torch. Only where the base has nvcc (the
# CUDA image); on a base without it (make docker-test's Debian) the build log says it is skipped.
RUN if ! command -v nvcc >/dev/null; then \
        echo "offloadbench: skipped: no nvcc in this base image, so DeepSpeed's CUDA ops are not prebuilt;" \
            "the CPU ops are built below (a CPU-only image, as made by make docker-test)"; \
    else \
        DS_ACCELERATOR=cuda DS_BUILD_CPU_ADAM=1 DS_BUILD_AIO=1 DS_ENABLE_NINJA=1 \
        pip install --no-cache-dir --no-build-isolation --no-deps --force-reinstall "$(grep '^deepspeed==' requirements.lock)" \
     && DS_ACCELERATOR=cuda python -c "from deepspeed.git_version_info import installed_ops as ops, accelerator_name as acc; \
assert acc == 'cuda' and ops['cpu_adam'] and ops['async_io'], (acc, ops); print('prebuilt:', [k for k, v in ops.items() if v])" \
     && DS_ACCELERATOR=cuda ds_report; \
    fi

# The CPU accelerator's variants of the same ops (cpu_adam, shm_comm, async_io), for containers
# started without a GPU: built by the project's own step (`make setup` runs it too) into
# /opt/venv/torch_extensions. Only the modules it imports are copied first (tests/test_docker.py
# checks the list), so that editing the rest of src/ does not rebuild the ops.
COPY --chown=${USER_UID}:${USER_GID} src/offloadbench/__init__.py src/offloadbench/env.py src/offloadbench/errors.py src/offloadbench/ops.py ./src/offloadbench/
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
