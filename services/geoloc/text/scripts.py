"""Which writing systems a text is in, from its characters' Unicode names: Hangul points to Korea,
Thai to Thailand, kana to Japan, without reading a word.

Scripts are ISO 15924 codes, as CLDR names them (places.script_likelihoods), so that what is
seen maps straight onto who writes it.
"""

from __future__ import annotations

import unicodedata
from collections import Counter

# The first word of a character's Unicode name, for the scripts that text on signs uses.
SCRIPT_OF_NAME_PREFIX = {
    "LATIN": "Latn",
    "CYRILLIC": "Cyrl",
    "GREEK": "Grek",
    "ARMENIAN": "Armn",
    "GEORGIAN": "Geor",
    "HEBREW": "Hebr",
    "ARABIC": "Arab",
    "SYRIAC": "Syrc",
    "THAANA": "Thaa",
    "DEVANAGARI": "Deva",
    "BENGALI": "Beng",
    "GURMUKHI": "Guru",
    "GUJARATI": "Gujr",
    "ORIYA": "Orya",
    "TAMIL": "Taml",
    "TELUGU": "Telu",
    "KANNADA": "Knda",
    "MALAYALAM": "Mlym",
    "SINHALA": "Sinh",
    "THAI": "Thai",
    "LAO": "Laoo",
    "TIBETAN": "Tibt",
    "MYANMAR": "Mymr",
    "KHMER": "Khmr",
    "ETHIOPIC": "Ethi",
    "MONGOLIAN": "Mong",
    "HANGUL": "Hang",
    "HIRAGANA": "Hira",
    "KATAKANA": "Kana",
    "CJK": "Hani",  # CJK UNIFIED IDEOGRAPH-…, CJK COMPATIBILITY IDEOGRAPH-…
}
# Names whose first word is not the script's.
SCRIPT_OF_NAME = {"HALFWIDTH KATAKANA": "Kana", "FULLWIDTH LATIN": "Latn"}


def script_of_character(character: str) -> str | None:
    """The ISO 15924 script of a letter, or None for digits, punctuation, symbols and unnamed ones."""
    if not character.isalpha():
        return None
    name = unicodedata.name(character, "")
    for prefix, script in SCRIPT_OF_NAME.items():
        if name.startswith(prefix):
            return script
    return SCRIPT_OF_NAME_PREFIX.get(name.split(" ", 1)[0])


def script_counts(text: str) -> Counter[str]:
    """How many letters of each script the text has."""
    return Counter(s for s in map(script_of_character, text) if s is not None)
