"""`geoloc train EXPERT`: train an expert's head on the Im2GPS3k train split, choose it on val."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("train", help="train an expert's model", description=__doc__)
    experts = parser.add_subparsers(dest="expert", required=True)
    from geoloc.training import fusion_cli as fusion
    from geoloc.training import gallery_cli as gallery
    from geoloc.training import sampler_cli as sampler
    from geoloc.training import text_cli as text
    from geoloc.training import tokens_cli as tokens

    gallery.add_parser(experts)
    sampler.add_parser(experts)
    tokens.add_parser(experts)
    fusion.add_parser(experts)
    text.add_parser(experts)
    return parser
