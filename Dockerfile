# offloadbench CUDA image: FIRST DRAFT. It is finished (base pinned by digest, CUDA torch build
# matched to the base, non-root user, entrypoint, hadolint, static tests) in its own issue; until
# then it is not part of any documented command.
#
#   docker build -t offloadbench .
#   docker run --gpus all --ipc=host -v "$PWD/results:/work/results" offloadbench snakemake --cores all

FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
# Python 3.11, as on the machines that recorded the reference results (pydoc_data.topics and the
# standard library's docstrings, the offline corpora, change between Python versions).
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common git libaio-dev ninja-build \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /work
COPY requirements.lock pyproject.toml README.md ./
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The same lock as `make setup`; on Linux, PyPI's torch wheel is the CUDA build.
RUN pip install "$(grep '^torch==' requirements.lock)" && pip install -r requirements.lock
COPY src ./src
RUN pip install --no-deps -e .
COPY Snakefile ./
COPY workflow ./workflow
COPY configs ./configs
VOLUME ["/work/results"]
CMD ["snakemake", "--cores", "all"]
