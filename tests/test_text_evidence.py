"""The text expert's reasoning, without a server: scripts, the gazetteer, and the evidence that turns
lines read into weighted points. The gazetteer and tables are the real ones (GeoNames cities of at
least 15,000 people, CLDR's territory languages); the lines are given, as a reader would give them."""

from __future__ import annotations

import pytest

from geoloc.geo.sphere import haversine_km
from geoloc.text.country_prior import load_country_prior
from geoloc.text.evidence import EvidenceSettings, LanguageDetector, TextAnswerer, city_radius_km
from geoloc.text.gazetteer import Gazetteer, normalised, within_one_edit
from geoloc.text.places import countries, script_likelihoods
from geoloc.text.reading import ReadLine
from geoloc.text.scripts import script_counts, script_of_character

BOX = ((0.0, 0.0), (10.0, 0.0), (10.0, 4.0), (0.0, 4.0))


@pytest.fixture(scope="module")
def gazetteer() -> Gazetteer:
    return Gazetteer()


@pytest.fixture(scope="module")
def answerer(gazetteer) -> TextAnswerer:
    return TextAnswerer(gazetteer, LanguageDetector(), load_country_prior())


def lines(*texts: str, confidence: float = 0.95) -> list[ReadLine]:
    return [ReadLine(t, confidence, BOX, "pp-ocrv4") for t in texts]


def mass_in(points, codes: set[str]) -> float:
    """The share of the points' weight at places of these countries (by the nearest country's places)."""
    places = [(c.lat_deg, c.lon_deg, code) for code, country in countries().items() for c in country.places]
    total, inside = 0.0, 0.0
    for p in points:
        nearest = min(places, key=lambda q: haversine_km(p.lat_deg, p.lon_deg, q[0], q[1]))
        total += p.weight
        inside += p.weight if nearest[2] in codes else 0.0
    return inside / total


def test_scripts_are_named_by_their_letters_alone():
    assert [script_of_character(c) for c in "aДλש한ひカ漢ก9-"] == [
        "Latn",
        "Cyrl",
        "Grek",
        "Hebr",
        "Hang",
        "Hira",
        "Kana",
        "Hani",
        "Thai",
        None,
        None,
    ]
    assert script_counts("最後の TEL0852") == {"Hani": 2, "Hira": 1, "Latn": 3}
    assert script_counts("ﾀｸｼｰ") == {"Kana": 4}  # half-width katakana


def test_the_script_tables_point_where_the_script_is_written():
    cyrillic = script_likelihoods()["Cyrl"]
    assert {"RU", "UA", "BY", "BG", "RS", "KZ"} <= {c for c, p in cyrillic.items() if p > 0.5}
    assert cyrillic.get("FR", 0) < 0.05
    assert max(script_likelihoods()["Hira"], key=script_likelihoods()["Hira"].get) == "JP"
    assert max(script_likelihoods()["Thai"], key=script_likelihoods()["Thai"].get) == "TH"


def test_names_match_whatever_their_case_diacritics_and_punctuation(gazetteer):
    assert normalised("  São-Paulo! ") == normalised("SAO PAULO") == "sao paulo"
    assert normalised("Ｔｏｋｙｏ") == "tokyo"  # full-width letters
    for text, city, country in [
        ("Welcome to Lisbon", "Lisbon", "PT"),
        ("LISBOA", "Lisbon", "PT"),
        ("Bem-vindo a São Paulo", "São Paulo", "BR"),
        ("RIO DE JANEIRO", "Rio de Janeiro", "BR"),  # three words
        ("東京タワー", "Tokyo", "JP"),  # no spaces: every run of characters is looked up
        ("서울역", "Seoul", "KR"),  # Seoul station
        ("Москва", "Moscow", "RU"),
    ]:
        found = {(m.city.name, m.city.country) for m in gazetteer.match(text)}
        assert (city, country) in found, (text, found)


def test_one_misread_letter_matches_at_half_the_weight_and_short_words_never_match(gazetteer):
    (best,) = [m for m in gazetteer.match("Sheraton Salgon") if m.city.country == "VN"]
    assert best.city.name == "Ho Chi Minh City" and best.quality == 0.5 and best.text == "Salgon"
    assert within_one_edit("saigon", "salgon") and within_one_edit("saigon", "saigonn")
    assert not within_one_edit("saigon", "slagon")
    for text in ("to", "PIN", "STOP", "THANK YOU", "25-YEAR-OLD", "x-rated"):
        assert gazetteer.match(text) == [], text


def test_welcome_to_lisbon_puts_the_heaviest_point_in_lisbon_with_a_city_sized_radius(answerer):
    evidence = answerer.answer(lines("Welcome to Lisbon"))
    top = max(evidence.points, key=lambda p: p.weight)
    assert haversine_km(top.lat_deg, top.lon_deg, 38.7223, -9.1393) < 25
    assert top.weight == pytest.approx(EvidenceSettings().place_share) and top.radius_km <= 40
    assert sum(p.weight for p in evidence.points) == pytest.approx(1.0)


def test_a_shared_name_goes_to_the_bigger_place_unless_the_rest_of_the_text_says_otherwise(answerer):
    alone = answerer.answer(lines("HYDERABAD"))
    assert alone.places[0][0].city.country == "IN"  # 6.8 million people against 1.4 million
    with_urdu = answerer.answer(lines("HYDERABAD", "خوش آمدید"))  # "welcome" in Urdu, Arabic script
    assert with_urdu.places[0][0].city.country == "PK"
    assert "Arab" in with_urdu.scripts


def test_cyrillic_text_points_to_the_countries_that_write_it(answerer):
    evidence = answerer.answer(lines("Добро пожаловать"))
    assert evidence.places == [] and evidence.points
    assert set(evidence.countries) <= {c for c, p in script_likelihoods()["Cyrl"].items() if p > 0}
    # Russian is also spoken by a quarter to a third of Estonia and Latvia, so they count.
    writers = {c for c, p in script_likelihoods()["Cyrl"].items() if p >= 0.2}
    assert {"RU", "UA", "BY", "BG", "RS", "KZ"} <= writers and "FR" not in writers
    assert mass_in(evidence.points, writers) > 0.95 and mass_in(evidence.points, {"RU"}) > 0.5


def test_kana_point_to_japan(answerer):
    evidence = answerer.answer(lines("最後の", "警戒警備"))  # read in a val photo from Shimane
    assert max(evidence.countries, key=evidence.countries.get) == "JP" and evidence.countries["JP"] > 0.95
    assert mass_in(evidence.points, {"JP"}) > 0.95


def test_no_usable_text_gives_no_points(answerer):
    assert answerer.answer([]).points == []
    assert answerer.answer(lines("Welcome to Lisbon", confidence=0.5)).points == []  # read too unsurely
    assert answerer.answer(lines("PIN", "NY")).points == []  # no place, too short for a language


def test_city_radii_grow_with_population_within_bounds():
    assert city_radius_km(15_000) == 5.0 and city_radius_km(40_000_000) == 40.0
    assert city_radius_km(500_000) < city_radius_km(2_000_000)
