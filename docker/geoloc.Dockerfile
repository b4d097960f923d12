# syntax=docker/dockerfile:1.7
# One image for all six geoloc services (embedding, gallery, sampler, tokens, text, orchestrator):
# each Kubernetes Deployment picks its entrypoint, `python -m geoloc.<service>.server`.
# docs/deploy.md says why one image rather than one per service.
#
#   docker build -f docker/geoloc.Dockerfile -t REGISTRY/geoloc:0.1.0 .
#   docker build -f docker/geoloc.Dockerfile --build-arg VARIANT=gpu -t REGISTRY/geoloc:0.1.0-gpu .
#
# VARIANT=cpu installs PyTorch's CPU build and faiss-cpu; VARIANT=gpu the CUDA build of the
# same torch and faiss-gpu (the gallery's k8s/overlays/gpu). The steps follow
# scripts/setup.sh: torch 2.13.0 first, then geoloc, then geoclip with --no-deps.

# Pinned by exact tag; release builds pass the digest too:
#   --build-arg PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:<digest>
# Python 3.11 because geoloc pins it (scripts/setup.sh).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cpu
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv && pip install --upgrade pip setuptools wheel
# torch alone first, in its own cached layer: on PyPI torch 2.13.0 is the CUDA build (for the
# gpu variant); the cpu variant takes the CPU build from PyTorch's own index instead, which
# keeps gigabytes of CUDA libraries out of the image. `==2.13.0` matches `2.13.0+cpu`.
RUN if [ "$VARIANT" = cpu ]; then \
        pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"; \
    else \
        pip install "torch==2.13.0"; \
    fi
# The checkout's layout is kept under /opt/geoloc and geoloc is installed editable from it, as
# scripts/setup.sh does: the services find models/ and artifacts/ next to services/ by default.
WORKDIR /opt/geoloc
COPY pyproject.toml README.md ./
COPY services/ services/
COPY models/ models/
# `geoloc features` (the k8s/jobs Job) reads the backbone's config and code from here and hashes
# them with its weights into the features' manifest; the services do not need it.
COPY model_repository/ model_repository/
RUN pip install -e . \
    && pip install --no-deps "geoclip==1.3.0" \
    && if [ "$VARIANT" = gpu ]; then pip uninstall -y faiss-cpu && pip install "faiss-gpu==1.15.1"; fi \
    && python -m compileall -q services
# The default 100K GPS gallery (GeoCLIP's coordinates through its location encoder, about a
# minute on CPU) is built here, once per image, into the path GEOLOC_GALLERY_GALLERY_DIR names
# in k8s/base: the pods' root filesystem is read-only and BUILD_IF_MISSING is off there.
RUN geoloc gallery build --out /opt/geoloc/artifacts/gallery/geoclip_100k

FROM ${PYTHON_IMAGE} AS runtime
# A numeric UID/GID, so that the pods' runAsNonRoot can be checked by the kubelet.
RUN groupadd --gid 10001 geoloc \
    && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin geoloc
# The text expert's second reader: Tesseract with the languages of the scripts PP-OCR cannot
# read (services/geoloc/text/config.py, DEFAULT_TESSERACT_LANGUAGES; eng comes with tesseract-ocr).
# Without it GEOLOC_TEXT_TESSERACT=auto reads with PP-OCR alone. libgl1 and libglib2.0-0 are
# what opencv-python (rapidocr's dependency) links against and the slim base lacks: without
# them the text expert cannot import cv2 and fails its start-up.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        tesseract-ocr tesseract-ocr-rus tesseract-ocr-ell tesseract-ocr-heb tesseract-ocr-ara \
        tesseract-ocr-tha tesseract-ocr-kor tesseract-ocr-hin tesseract-ocr-kat \
        libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
# Owned by root and not writable by the service user: nothing under /opt changes at run time.
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/geoloc /opt/geoloc
# HOME and the Hugging Face cache point at /tmp, the one writable place (an emptyDir in k8s).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    HF_HOME=/tmp/huggingface
WORKDIR /opt/geoloc
USER 10001:10001
EXPOSE 50051 9464
# No service by default: the Deployment's `command` names one.
CMD ["geoloc", "--help"]
