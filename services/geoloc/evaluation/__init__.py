"""Offline evaluation of image geolocation: score a labelled split against predictions.

`geoloc eval` (see `cli`) reads a split folder (`labels.csv` + `images/`), takes
predictions from a `PredictionSource` (a CSV today, the live orchestrator later) and
reports accuracy within 1/25/200/750/2500 km, GeoScore and median/mean error, overall
and per expert.

This package file stays free of imports: `geoloc --help` imports the `cli` submodule,
and numpy/tqdm must only load when an evaluation actually runs.
"""
