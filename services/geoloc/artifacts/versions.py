"""The version of an artefact's content: a short hash of it as sorted JSON."""

from __future__ import annotations

import hashlib
import json


def content_version(content: object) -> str:
    """The first 12 hex of the sha256 of `content` as JSON with sorted keys (json.dumps' default
    separators, ASCII-escaped): the version of a fusion file, a country prior, a bundle and the key
    of the text reader's cache. Changing the encoding changes every version that is shipped."""
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]
