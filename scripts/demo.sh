#!/usr/bin/env bash
# README command 1: sets up a fresh machine, starts the whole suite on loopback (Triton and the
# six services, `geoloc up`), geolocates the sample photos the project ships (samples/), prints
# the answers and a map, and stops the suite. Extra arguments go to `geoloc locate`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/geoloc up
trap '.venv/bin/geoloc down' EXIT
mkdir -p reports
.venv/bin/geoloc locate samples/kauai.jpg samples/kauai_gps.jpg --map reports/samples-map.png "$@"
