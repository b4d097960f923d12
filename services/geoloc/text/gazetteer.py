"""Place names in read text: exact and fuzzy, multi-word, blind to case and diacritics.

Every populated place of places.cities() is indexed under each of its names, normalised the way
text is (`normalised`). A line is cut into runs of one to MAX_WORDS words, and scripts written
without spaces (Chinese, Japanese, Thai) into every run of their characters, and each run is
looked up. PP-OCR often runs words together, so words are also cut where a lower-case letter
meets a capital: "WelcometoLisbon" still names Lisbon. Fuzzy matching allows one edit (a letter
misread, dropped or added, as "Sheraton Salgon" for Saigon) in runs of at least
FUZZY_MIN_LETTERS letters, through an index of the names with one letter deleted (symmetric
deletion: two strings within one edit share a deletion). A name is matched only when long
enough to be more than a word fragment.

A name that several places share matches them all; which is meant is for the answer to weigh
(evidence.py), by population and by what else the text says.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from geoloc.text.places import City, cities

MAX_WORDS = 4
MIN_LETTERS = {"spaced": 4, "unspaced": 4}  # in letters(): 4 Latin letters, 2 Han; shorter ones match by chance
FUZZY_MIN_LETTERS = 6
FUZZY_QUALITY = 0.5  # a one-edit match counts half an exact one
UNSPACED_MAX_RUN = 8
# Thai, Lao, kana, Han, Hangul (written with spaces, but a place name takes suffixes: 서울역 is Seoul station).
_UNSPACED = re.compile(r"[\u0e00-\u0eff\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f]")
_NOT_WORD = re.compile(r"[^\w]+|_")
# Words are cut at spaces, and where a lower-case letter meets a capital: PP-OCR often drops the
# spaces between words ("WelcometoLisbon").
_CAMEL = re.compile(r"\s+|(?<=[a-z])(?=[A-Z])")
_IATA = re.compile(r"^[A-Z]{3}$")  # GeoNames lists airport codes among alternate names


def normalised(text: str) -> str:
    """Case-folded, compatibility forms folded (full-width letters), diacritics of Latin, Greek and
    Cyrillic letters dropped, and everything that is not a letter or digit a single space."""
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text))
    kept, previous = [], ""
    for character in decomposed:
        if unicodedata.combining(character) and previous and ord(previous) < 0x530:
            continue  # é → e, й → и; marks of other scripts (Thai vowels, Devanagari signs) are letters' parts
        kept.append(character)
        previous = character
    folded = unicodedata.normalize("NFC", "".join(kept)).casefold()
    return _NOT_WORD.sub(" ", folded).strip()


def letters(text: str) -> int:
    """Letters, a character of a script written without spaces counting two (東京 is a word, "to" is not)."""
    return sum(2 if _UNSPACED.match(c) else 1 for c in text if c.isalpha())


def is_unspaced(text: str) -> bool:
    return bool(_UNSPACED.search(text))


def long_enough(key: str) -> bool:
    return letters(key) >= MIN_LETTERS["unspaced" if is_unspaced(key) else "spaced"]


def fuzzy_matchable(key: str) -> bool:
    """Long enough, in a script written with spaces (one edit in 東京 is another word)."""
    return not is_unspaced(key) and letters(key) >= FUZZY_MIN_LETTERS


def deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def within_one_edit(a: str, b: str) -> bool:
    """True when a and b differ by at most one substitution, insertion or deletion."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) <= 1
    short, long_ = sorted((a, b), key=len)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


@dataclass(frozen=True)
class PlaceMatch:
    city: City
    text: str  # the run of the line that matched, as read
    quality: float  # 1 for an exact match, FUZZY_QUALITY for a one-edit one


class Gazetteer:
    """Populated places by normalised name."""

    def __init__(self, places: tuple[City, ...] | None = None):
        self.places = places if places is not None else cities()
        self.exact: dict[str, list[int]] = {}
        for index, city in enumerate(self.places):
            for name in city.names:
                if name != city.name and _IATA.match(name):
                    continue
                key = normalised(name)
                if long_enough(key):
                    places = self.exact.setdefault(key, [])
                    if not places or places[-1] != index:
                        places.append(index)
        self.fuzzy: dict[str, set[str]] = {}
        for key in self.exact:
            if fuzzy_matchable(key):
                for variant in deletions(key) | {key}:
                    self.fuzzy.setdefault(variant, set()).add(key)

    def runs(self, line: str) -> list[tuple[str, str]]:
        """(normalised run, the words as read) for every run of one to MAX_WORDS words of the line,
        and every run of 2 to UNSPACED_MAX_RUN characters of a word in a script written without spaces."""
        words = [w for w in _CAMEL.split(line.strip()) if w]
        keys = [normalised(w) for w in words]
        out = []
        for start in range(len(words)):
            for end in range(start + 1, min(start + MAX_WORDS, len(words)) + 1):
                key = " ".join(k for k in keys[start:end] if k)
                if key:
                    out.append((key, " ".join(words[start:end])))
        for word, key in zip(words, keys, strict=True):
            if is_unspaced(key):
                compact = key.replace(" ", "")
                for size in range(2, min(UNSPACED_MAX_RUN, len(compact)) + 1):
                    out += [(compact[i : i + size], word) for i in range(len(compact) - size + 1)]
        return out

    def match(self, line: str) -> list[PlaceMatch]:
        """Every place the line names, the best match per place, exact before fuzzy."""
        best: dict[int, PlaceMatch] = {}
        for key, read in self.runs(line):
            found = [(i, 1.0) for i in self.exact.get(key, ())]
            if not found and fuzzy_matchable(key):
                near = {name for v in deletions(key) | {key} for name in self.fuzzy.get(v, ())}
                found = [(i, FUZZY_QUALITY) for name in near if within_one_edit(key, name) for i in self.exact[name]]
            for index, quality in found:
                if index not in best or quality > best[index].quality:
                    best[index] = PlaceMatch(self.places[index], read, quality)
        return list(best.values())
