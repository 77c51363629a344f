# Build: make image   (runs: docker build -t unitvox:latest .)
#
# One image for every stage: `unitvox <stage> ...` and, for multi-GPU training, `torchrun ... -m unitvox train ...`.
#
# Base: the official PyTorch CUDA runtime image at the torch version the project is tested with (2.13.0).
# Its CUDA 12.6 build runs on the R535/R550 long-term drivers of most managed GPU node pools and covers
# GPUs up to Hopper (H100, H200). Blackwell nodes need the CUDA 13 build of the same torch:
#   docker build --build-arg BASE_IMAGE=pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime -t unitvox:latest .
# Both stages use the same base, so the interpreter the venv links to exists in the final image.
#
# The same file builds a CPU image on any base with Python 3.11 and pip (tests/test_image.py builds one on
# a debootstrapped Debian, offline, from wheels put in wheelhouse/ by `pip wheel`):
#   docker build --build-arg BASE_IMAGE=BASE --build-arg TORCH=torch==2.13.0+cpu --build-arg PIP_OPTIONS=--no-index \
#       --build-arg BUILD_PACKAGES= .
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime

# ---- builder: install unitvox and its dependencies into /opt/venv --------------------------------
FROM ${BASE_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# --system-site-packages keeps the base's CUDA torch visible; the venv holds everything else.
# --without-pip: the base's pip, run by the venv's interpreter, installs into the venv, and a
# Debian-style system Python has no ensurepip to seed one.
RUN python3 -m venv --system-site-packages --without-pip /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# A C compiler for the dependencies that ship no wheel (pesq), in this stage only: the final image gets
# none. BUILD_PACKAGES="" skips it when every dependency comes as a wheel (a wheelhouse built with `pip wheel`).
ARG BUILD_PACKAGES="gcc libc6-dev"
# hadolint ignore=DL3008,SC2086
RUN if [ -n "$BUILD_PACKAGES" ]; then \
        apt-get update && apt-get install -y --no-install-recommends $BUILD_PACKAGES && rm -rf /var/lib/apt/lists/*; \
    fi

WORKDIR /src
COPY pyproject.toml README.md ./
# wheelhouse/ is optional: the bracket lets COPY match nothing, and README.md keeps the source list non-empty.
COPY README.md wheelhous[e] /wheels/

# TORCH empty: torch is the base's own build (the CUDA one), and the constraint pins it (e.g. 2.13.0+cu126):
# pyproject's `torch>=2.1` is already met, and should any dependency ever ask for another torch the build
# fails here instead of quietly replacing the CUDA build with a CPU wheel from PyPI.
# TORCH set (a requirement such as torch==2.13.0+cpu): that build goes into the venv first, then is pinned.
# PIP_OPTIONS: e.g. --no-index, to install only from wheelhouse/ (pip's index may be out of reach).
ARG TORCH=""
ARG PIP_OPTIONS=""
# The dependencies come from pyproject.toml alone, so this layer stays cached while only src/ changes.
# resemblyzer ships its speaker encoder in its wheel; --no-deps skips its source-only webrtcvad
# (webrtcvad-wheels provides the same module), as `make install` does.
# hadolint ignore=SC2086,DL3013
RUN set -eu \
    && if [ -n "$TORCH" ]; then python -m pip install --no-cache-dir $PIP_OPTIONS --find-links /wheels "$TORCH"; fi \
    && python -c 'import torch; print(f"torch=={torch.__version__}")' > /tmp/torch-constraint.txt \
    && python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && python -m pip install --no-cache-dir $PIP_OPTIONS --find-links /wheels \
        --constraint /tmp/torch-constraint.txt --requirement /tmp/requirements.txt \
    && python -m pip install --no-cache-dir $PIP_OPTIONS --find-links /wheels --no-deps \
        resemblyzer==0.1.4 webrtcvad-wheels==2.0.14.post1 \
    && rm /tmp/torch-constraint.txt /tmp/requirements.txt

COPY src ./src

# torch's own `torchrun` script runs the base interpreter, which cannot see the venv; the one written
# here runs the venv's, so `torchrun -m unitvox train` starts workers that can import unitvox.
# hadolint ignore=SC2086
RUN python -m pip install --no-cache-dir $PIP_OPTIONS --find-links /wheels --no-deps . \
    && printf '%s\n' '#!/opt/venv/bin/python' 'import sys' 'from torch.distributed.run import main' \
        'sys.exit(main())' > /opt/venv/bin/torchrun \
    && chmod 0755 /opt/venv/bin/torchrun \
    && python -c 'import os, torch, unitvox; own = bool(os.environ["TORCH"]); assert own == torch.__file__.startswith("/opt/venv/"), "torch is not the build asked for"; assert own or torch.version.cuda, "the base torch is not a CUDA build"'

# ---- final: the runtime image, no compilers or build tools added -------------------------------------
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="unitvox" \
      org.opencontainers.image.description="Acoustic units, motifs and unit-to-waveform vocoders for speech research, as batch jobs." \
      org.opencontainers.image.licenses="Apache-2.0"

# tini is PID 1: it forwards SIGTERM to the stage (training checkpoints on it) and reaps zombies
# (DataLoader workers, torchrun's children). Its version follows the base's distribution release, which
# a build argument may change, so the package is not pinned to one release's version string.
# /scratch is where pods mount their writable emptyDir (HOME, TMPDIR and the caches point there, as the
# controller's manifests set them); creating it here lets a plain `docker run` work the same way. It is
# world-writable and sticky, as /tmp is: Docker gives a tmpfs mounted there (`--read-only --tmpfs
# /scratch`) this directory's mode, with root as its owner.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && groupadd --gid 10001 unitvox \
    && useradd --no-log-init --uid 10001 --gid 10001 --home-dir /scratch --no-create-home \
        --shell /usr/sbin/nologin unitvox \
    && install -d -m 1777 /scratch

ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/scratch \
    TMPDIR=/scratch

# The shipped configs, so `unitvox validate --config jobs/base.yaml` works inside the image.
COPY jobs /app/jobs
WORKDIR /app

# The venv is the last layer, and the only large one: a storage driver such as vfs copies the whole
# tree for every layer (and every container) after it. Whether it runs in this stage is what
# tests/test_image.py checks, by running the image; the builder has imported torch and unitvox.
COPY --from=builder /opt/venv /opt/venv

# Numeric, so Kubernetes can check runAsNonRoot against the image.
USER 10001:10001

# Prometheus metrics of training and GAN health.
EXPOSE 9400

ENTRYPOINT ["/usr/bin/tini", "--", "unitvox"]
CMD ["--help"]
