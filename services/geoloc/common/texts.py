"""Checking a text query before a text tower reads it (EmbedText, LocateText)."""

from __future__ import annotations

import unicodedata

from geoloc.common.errors import InvalidArgument

MAX_TEXT_CHARS = 1000  # CLIP reads 77 tokens; a longer limit only lets a caller see `truncated`


def validated_text(text: str, max_chars: int, field: str) -> str:
    """The text as sent; raises InvalidArgument naming `field` when it is empty or only whitespace,
    longer than max_chars, or holds control characters other than whitespace (a tokenizer would
    drop them without a word)."""
    if not text.strip():
        raise InvalidArgument(field, "is empty; send the text to embed, such as a description of a place")
    if len(text) > max_chars:
        raise InvalidArgument(field, f"has {len(text)} characters; at most {max_chars}")
    control = [c for c in text if unicodedata.category(c) == "Cc" and not c.isspace()]
    if control:
        raise InvalidArgument(field, f"holds {len(control)} control characters (the first is U+{ord(control[0]):04X})")
    return text
