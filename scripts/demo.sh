#!/usr/bin/env bash
# Sets up a fresh machine, then runs the main job with the built-in defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/geoloc smoke "$@"
