"""Artefact formats: checkpoints, model bundles and the files they are written as (atomically, hashed once)."""
