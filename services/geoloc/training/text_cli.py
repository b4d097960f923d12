"""`geoloc train text`: fit the text expert's prior of where photos are taken, by country.

The text expert's only fitted part (its readers, gazetteer and language tables ship in packages):
the share of a GPS gallery's photos in each country, by the offline country polygons. Fitted on
the gallery's coordinates (default: GeoCLIP's 100K MP-16 gallery), never on Im2GPS3k, so that no
photo the cross-validation scores entered it. Writes models/text/country_prior.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("text", help="fit the text expert's country prior", description=__doc__)
    parser.add_argument("--gallery", type=Path, metavar="CSV", help="lat,lon rows (default: the 100K GPS gallery)")
    parser.add_argument("--out", type=Path, help="where it goes (default: the shipped models/text/country_prior.json)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from geoloc.artifacts.files import file_sha256
    from geoloc.gallery.build import default_gallery_csv, read_gps_csv
    from geoloc.text.country_prior import (
        PSEUDO_COUNT,
        SHIPPED_COUNTRY_PRIOR,
        country_counts,
        fitted_prior,
        save_country_prior,
    )
    from geoloc.text.places import countries
    from geoloc.training.manifest import command_line

    started = time.monotonic()
    source = args.gallery or default_gallery_csv()
    coordinates, _ = read_gps_csv(source)
    counts = country_counts(coordinates[:, 0], coordinates[:, 1])
    shares = fitted_prior(counts, sorted(countries()))
    manifest = {
        "what": "the text expert's prior of where photos are taken: the share of the gallery's photos per country",
        "data": {
            "gallery_csv": str(source.name),
            "gallery_sha256": file_sha256(source),
            "points": len(coordinates),
            "in_a_country": sum(counts.values()),
        },
        "command": command_line("text"),
        "pseudo_count": PSEUDO_COUNT,
        "seconds": round(time.monotonic() - started, 1),
    }
    out = args.out or SHIPPED_COUNTRY_PRIOR
    version = save_country_prior(out, shares, manifest)
    top = ", ".join(f"{c} {shares[c]:.1%}" for c in sorted(shares, key=shares.get, reverse=True)[:8])
    print(f"{len(shares)} countries ({top}, ...) written to {out} (version {version})")
    return 0
