#!/usr/bin/env bash
# Sets up this checkout on a fresh machine that has Python 3.11: a virtual environment in
# .venv holding geoloc (editable) and everything it and its tests need. Safe to re-run:
# it reinstalls only when pyproject.toml or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${GEOLOC_PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
"$python" - <<'PY' || { echo "geoloc needs Python 3.11 (Triton's Python backend stub is built for it)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)
PY

# The text expert's second reader (Tesseract, for the scripts PP-OCR cannot read) and the fonts its
# tests draw signs with, from Debian's packages where this runs as root with apt-get; elsewhere the
# expert reads with PP-OCR alone and those tests skip, saying why.
text_packages="tesseract-ocr tesseract-ocr-rus tesseract-ocr-ell tesseract-ocr-heb tesseract-ocr-ara
    tesseract-ocr-tha tesseract-ocr-kor tesseract-ocr-hin tesseract-ocr-kat fonts-dejavu-core fonts-noto-cjk"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # shellcheck disable=SC2086
    if ! dpkg -s $text_packages >/dev/null 2>&1; then
        apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $text_packages >/dev/null
    fi
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.geoloc-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip setuptools wheel
    # torch first, on its own: 2.13.0 is the CPU build here, and once it is installed
    # nothing later can pull a CUDA build (gigabytes) in through an unpinned requirement.
    .venv/bin/python -m pip install --quiet "torch==2.13.0"
    .venv/bin/python -m pip install --quiet -e ".[dev]"
    # GeoCLIP's released weights and 100K GPS gallery. --no-deps: its requirements pull
    # torchvision and transformers' CLIP download path, and geoloc never imports the package.
    .venv/bin/python -m pip install --quiet --no-deps "geoclip==1.3.0"
    echo "$want" >"$stamp"
fi
echo "geoloc is set up in $(pwd)/.venv"
