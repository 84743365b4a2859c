"""Wikipedia-like intro texts for the embedded world's settlements, in English, German and French.

The texts are built from the settlement's own facts (name, kind, administrative area, country,
population, coordinates, the nearest city) and from its scenery (scenery.py: coast, mountains,
river or lake, forest, fields, desert or snow, climate, skyline or a few houses, its landmark),
which is what its photographs show: so a summary and a photograph of the same place share
meaning, as they do on Wikipedia. Two places in the same country share words, a city reads
differently from a village, and the coordinates are in the text as on Wikipedia. Several templates per language, picked by a stable hash of the place
ID, keep the corpus from being one sentence with the names swapped. The same facts always give
the same text (no randomness outside the hash), which the pipeline's byte-identical Parquet
relies on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from mlm_pipeline.world.scenery import Scenery

LANGS = ("en", "de", "fr")

# Country names where German or French differ from English. Others keep the English name,
# which is what these Wikipedias do for most small countries anyway.
COUNTRY_NAMES: dict[str, tuple[str, str]] = {  # ISO code -> (de, fr)
    "AL": ("Albanien", "Albanie"), "AR": ("Argentinien", "Argentine"), "AT": ("Österreich", "Autriche"),
    "AU": ("Australien", "Australie"), "BA": ("Bosnien und Herzegowina", "Bosnie-Herzégovine"),
    "BD": ("Bangladesch", "Bangladesh"), "BE": ("Belgien", "Belgique"), "BG": ("Bulgarien", "Bulgarie"),
    "BR": ("Brasilien", "Brésil"), "BY": ("Belarus", "Biélorussie"), "CA": ("Kanada", "Canada"),
    "CH": ("Schweiz", "Suisse"), "CL": ("Chile", "Chili"), "CN": ("China", "Chine"),
    "CO": ("Kolumbien", "Colombie"), "CY": ("Zypern", "Chypre"), "CZ": ("Tschechien", "Tchéquie"),
    "DE": ("Deutschland", "Allemagne"), "DK": ("Dänemark", "Danemark"), "DZ": ("Algerien", "Algérie"),
    "EE": ("Estland", "Estonie"), "EG": ("Ägypten", "Égypte"), "ES": ("Spanien", "Espagne"),
    "FI": ("Finnland", "Finlande"), "FR": ("Frankreich", "France"), "GB": ("Vereinigtes Königreich", "Royaume-Uni"),
    "GR": ("Griechenland", "Grèce"), "HR": ("Kroatien", "Croatie"), "HU": ("Ungarn", "Hongrie"),
    "ID": ("Indonesien", "Indonésie"), "IE": ("Irland", "Irlande"), "IN": ("Indien", "Inde"),
    "IR": ("Iran", "Iran"), "IS": ("Island", "Islande"), "IT": ("Italien", "Italie"),
    "JP": ("Japan", "Japon"), "KE": ("Kenia", "Kenya"), "KR": ("Südkorea", "Corée du Sud"),
    "LT": ("Litauen", "Lituanie"), "LU": ("Luxemburg", "Luxembourg"), "LV": ("Lettland", "Lettonie"),
    "MA": ("Marokko", "Maroc"), "MD": ("Moldau", "Moldavie"), "MK": ("Nordmazedonien", "Macédoine du Nord"),
    "MT": ("Malta", "Malte"), "MX": ("Mexiko", "Mexique"), "NG": ("Nigeria", "Nigeria"),
    "NL": ("Niederlande", "Pays-Bas"), "NO": ("Norwegen", "Norvège"), "NZ": ("Neuseeland", "Nouvelle-Zélande"),
    "PE": ("Peru", "Pérou"), "PH": ("Philippinen", "Philippines"), "PK": ("Pakistan", "Pakistan"),
    "PL": ("Polen", "Pologne"), "PT": ("Portugal", "Portugal"), "RO": ("Rumänien", "Roumanie"),
    "RS": ("Serbien", "Serbie"), "RU": ("Russland", "Russie"), "SE": ("Schweden", "Suède"),
    "SI": ("Slowenien", "Slovénie"), "SK": ("Slowakei", "Slovaquie"), "TH": ("Thailand", "Thaïlande"),
    "TN": ("Tunesien", "Tunisie"), "TR": ("Türkei", "Turquie"), "UA": ("Ukraine", "Ukraine"),
    "US": ("Vereinigte Staaten", "États-Unis"), "VN": ("Vietnam", "Viêt Nam"), "ZA": ("Südafrika", "Afrique du Sud"),
}

# French needs the article for "in <country>": en France, au Canada, aux États-Unis.
FR_COUNTRY_PREPOSITION: dict[str, str] = {
    "CA": "au", "BR": "au", "JP": "au", "MA": "au", "MX": "au", "PE": "au", "PK": "au", "PT": "au",
    "KE": "au", "LU": "au", "NG": "au", "BD": "au", "VN": "au", "CL": "au", "DK": "au",
    "NL": "aux", "US": "aux", "PH": "aux",
}

# German/French nouns for the kinds of settlement the world uses; (noun, gender) with gender
# "m", "f" or "n". Unknown kinds fall back to a neutral word rather than leaving English in.
KIND_NOUNS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {  # en label -> ((de, g), (fr, g))
    "city": (("Stadt", "f"), ("ville", "f")),
    "big city": (("Großstadt", "f"), ("grande ville", "f")),
    "large city": (("Großstadt", "f"), ("grande ville", "f")),
    "town": (("Kleinstadt", "f"), ("petite ville", "f")),
    "village": (("Dorf", "n"), ("village", "m")),
    "hamlet": (("Weiler", "m"), ("hameau", "m")),
    "human settlement": (("Siedlung", "f"), ("localité", "f")),
    "municipality": (("Gemeinde", "f"), ("municipalité", "f")),
    "commune of France": (("Gemeinde in Frankreich", "f"), ("commune française", "f")),
    "municipality of Germany": (("Gemeinde in Deutschland", "f"), ("commune d'Allemagne", "f")),
    "urban municipality of Germany": (("Stadt in Deutschland", "f"), ("ville d'Allemagne", "f")),
    "capital": (("Hauptstadt", "f"), ("capitale", "f")),
    "capital city": (("Hauptstadt", "f"), ("capitale", "f")),
    "metropolis": (("Metropole", "f"), ("métropole", "f")),
    "suburb": (("Vorort", "m"), ("banlieue", "f")),
    "market town": (("Marktgemeinde", "f"), ("bourg", "m")),
    "county seat": (("Kreisstadt", "f"), ("chef-lieu de comté", "m")),
    "port settlement": (("Hafenstadt", "f"), ("ville portuaire", "f")),
    "spa town": (("Kurort", "m"), ("station thermale", "f")),
    "rural settlement": (("ländliche Siedlung", "f"), ("localité rurale", "f")),
    "urban settlement": (("städtische Siedlung", "f"), ("localité urbaine", "f")),
    "comune of Italy": (("italienische Gemeinde", "f"), ("commune d'Italie", "f")),
    "municipality of Spain": (("Gemeinde in Spanien", "f"), ("municipalité d'Espagne", "f")),
    "municipality of Switzerland": (("politische Gemeinde der Schweiz", "f"), ("commune de Suisse", "f")),
    "municipality of Austria": (("Gemeinde in Österreich", "f"), ("commune d'Autriche", "f")),
    "municipality of the Netherlands": (("Gemeinde in den Niederlanden", "f"), ("commune des Pays-Bas", "f")),
    "municipality of the Czech Republic": (("Gemeinde in Tschechien", "f"), ("commune de Tchéquie", "f")),
    "village of Poland": (("Dorf in Polen", "n"), ("village de Pologne", "m")),
    "town of the United States": (("Town in den Vereinigten Staaten", "f"), ("town des États-Unis", "f")),
    "city of the United States": (("City in den Vereinigten Staaten", "f"), ("ville des États-Unis", "f")),
    "city with millions of inhabitants": (("Millionenstadt", "f"), ("ville millionnaire", "f")),
    "city or town": (("Stadt", "f"), ("ville", "f")),
    "global city": (("Weltstadt", "f"), ("ville mondiale", "f")),
    "megacity": (("Megastadt", "f"), ("mégapole", "f")),
    "neighborhood": (("Stadtviertel", "n"), ("quartier", "m")),
    "castle": (("Burg", "f"), ("château fort", "m")),
}
FALLBACK_KIND = {"de": ("Ortschaft", "f"), "fr": ("localité", "f")}


@dataclass(frozen=True)
class PlaceFacts:
    """What an intro may say about a place; the caller resolves IDs to names."""

    key: str  # stable ID (the QID) that picks the template
    name: str
    kind_en: str  # English class label, e.g. "city"
    country_code: str  # ISO 3166-1 alpha-2, "" when unknown
    country: dict[str, str]  # the country's name per language ("en" at least), empty when unknown
    lat: float | None
    lon: float | None
    population: int | None = None
    admin: str = ""  # first-level administrative area, "" when unknown
    continent: str = ""
    scenery: Scenery | None = None


def _pick(key: str, lang: str, n: int, salt: str = "") -> int:
    digest = hashlib.blake2b(f"{key}|{lang}|{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n


def _number(value: int, lang: str) -> str:
    text = f"{value:,}"
    if lang == "de":
        return text.replace(",", ".")
    if lang == "fr":
        return text.replace(",", "\u202f")
    return text


def _coord(value: float, lang: str, pos: str, neg: str) -> str:
    text = f"{abs(value):.2f}"
    if lang in ("de", "fr"):
        text = text.replace(".", ",")
    return f"{text}°\u00a0{pos if value >= 0 else neg}"


def _country(facts: PlaceFacts, lang: str) -> str:
    english = facts.country.get("en", "")
    own = facts.country.get(lang, "")
    if own and (own != english or lang == "en"):
        return own
    names = COUNTRY_NAMES.get(facts.country_code)
    if names and lang in ("de", "fr"):
        return names[0] if lang == "de" else names[1]
    return own or english


def _article_en(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


_KIND_NOUNS_LOWER = {label.lower(): nouns for label, nouns in KIND_NOUNS.items()}


def _names_country(facts: PlaceFacts) -> bool:
    """Kinds like "commune of France" already say the country; the text must not say it twice."""
    return " of " in facts.kind_en


def _kind(facts: PlaceFacts, lang: str) -> tuple[str, str]:
    nouns = _KIND_NOUNS_LOWER.get(facts.kind_en.lower())
    if lang == "de":
        return nouns[0] if nouns else FALLBACK_KIND["de"]
    return nouns[1] if nouns else FALLBACK_KIND["fr"]


def _en(f: PlaceFacts) -> str:
    kind = f.kind_en or "settlement"
    country = "" if _names_country(f) else _country(f, "en")
    where = ", ".join(part for part in (f.admin, country) if part)
    lat_lon = (
        f"{_coord(f.lat, 'en', 'N', 'S')} {_coord(f.lon, 'en', 'E', 'W')}"
        if f.lat is not None and f.lon is not None
        else ""
    )
    openings = [
        f"{f.name} is {_article_en(kind)} {kind}" + (f" in {where}" if where else "") + ".",
        f"{f.name} is {_article_en(kind)} {kind}" + (f" located in {where}" if where else "") + ".",
        f"{f.name}" + (f" ({f.admin})" if f.admin else "") + f" is {_article_en(kind)} {kind}"
        + (f" of {country}" if country else "") + ".",
    ]
    sentences = [openings[_pick(f.key, "en", len(openings))]]
    if f.population:
        pops = [
            f"It has a population of {_number(f.population, 'en')}.",
            f"At the last count, {_number(f.population, 'en')} people lived there.",
            f"Its population was recorded as {_number(f.population, 'en')}.",
        ]
        sentences.append(pops[_pick(f.key, "en", len(pops), "pop")])
    if lat_lon:
        where_sentences = [
            f"The {kind} lies at {lat_lon}.",
            f"Its coordinates are {lat_lon}.",
            f"It is situated at {lat_lon}"
            + (f", in the {'northern' if (f.lat or 0) >= 0 else 'southern'} hemisphere" if f.lat is not None else "")
            + ".",
        ]
        sentences.append(where_sentences[_pick(f.key, "en", len(where_sentences), "geo")])
    sentences += scenery_sentences(f, "en")
    if f.admin and country and _pick(f.key, "en", 2, "admin"):
        sentences.append(f"{f.admin} is one of the administrative divisions of {country}.")
    return " ".join(sentences)


def _de(f: PlaceFacts) -> str:
    noun, gender = _kind(f, "de")
    article = {"f": "eine", "m": "ein", "n": "ein"}[gender]
    pronoun = {"f": "Sie", "m": "Er", "n": "Es"}[gender]
    country = "" if _names_country(f) else _country(f, "de")
    where_parts = [part for part in (f.admin, country) if part]
    lat_lon = (
        f"{_coord(f.lat, 'de', 'N', 'S')}, {_coord(f.lon, 'de', 'O', 'W')}"
        if f.lat is not None and f.lon is not None
        else ""
    )
    openings = [
        f"{f.name} ist {article} {noun}" + (f" in {', '.join(where_parts)}" if where_parts else "") + ".",
        f"{f.name} ist {article} {noun}" + (f" im Gebiet {f.admin}" if f.admin else "")
        + (f" ({country})" if country else "") + ".",
        f"{f.name} ist {article} {noun}" + (f", gelegen in {country}" if country else "")
        + (f", Verwaltungseinheit {f.admin}" if f.admin else "") + ".",
    ]
    sentences = [openings[_pick(f.key, "de", len(openings))]]
    if f.population:
        pops = [
            f"{pronoun} hat {_number(f.population, 'de')} Einwohner.",
            f"Bei der letzten Zählung lebten dort {_number(f.population, 'de')} Menschen.",
            f"Die Einwohnerzahl beträgt {_number(f.population, 'de')}.",
        ]
        sentences.append(pops[_pick(f.key, "de", len(pops), "pop")])
    if lat_lon:
        geo = [
            f"Die geographischen Koordinaten sind {lat_lon}.",
            f"{pronoun} liegt bei {lat_lon}.",
            f"Der Ort befindet sich auf der {'Nord' if (f.lat or 0) >= 0 else 'Süd'}halbkugel bei {lat_lon}.",
        ]
        sentences.append(geo[_pick(f.key, "de", len(geo), "geo")])
    sentences += scenery_sentences(f, "de")
    return " ".join(sentences)


def _fr(f: PlaceFacts) -> str:
    noun, gender = _kind(f, "fr")
    article = "une" if gender == "f" else "un"
    country = "" if _names_country(f) else _country(f, "fr")
    prep = FR_COUNTRY_PREPOSITION.get(f.country_code, "en")
    in_country = f"{prep} {country}" if country else ""
    lat_lon = (
        f"{_coord(f.lat, 'fr', 'N', 'S')}, {_coord(f.lon, 'fr', 'E', 'O')}"
        if f.lat is not None and f.lon is not None
        else ""
    )
    openings = [
        f"{f.name} est {article} {noun}" + (" située" if gender == "f" else " situé")
        + (f" {in_country}" if in_country else "") + (f", dans la région {f.admin}" if f.admin else "") + ".",
        f"{f.name} est {article} {noun}" + (f" {in_country}" if in_country else "") + ".",
        f"{f.name} est {article} {noun}" + (f" de la subdivision {f.admin}" if f.admin else "")
        + (f" {in_country}" if in_country else "") + ".",
    ]
    sentences = [openings[_pick(f.key, "fr", len(openings))]]
    if f.population:
        pops = [
            f"Elle compte {_number(f.population, 'fr')} habitants." if gender == "f"
            else f"Il compte {_number(f.population, 'fr')} habitants.",
            f"Sa population est de {_number(f.population, 'fr')} habitants.",
            f"Lors du dernier recensement, on y dénombrait {_number(f.population, 'fr')} habitants.",
        ]
        sentences.append(pops[_pick(f.key, "fr", len(pops), "pop")])
    if lat_lon:
        geo = [
            f"Ses coordonnées géographiques sont {lat_lon}.",
            f"La localité se trouve à {lat_lon}.",
            f"{'Elle est située' if gender == 'f' else 'Il est situé'} dans l'hémisphère "
            f"{'nord' if (f.lat or 0) >= 0 else 'sud'}, à {lat_lon}.",
        ]
        sentences.append(geo[_pick(f.key, "fr", len(geo), "geo")])
    sentences += scenery_sentences(f, "fr")
    return " ".join(sentences)


# --- the scenery in words: the same meaning as the photographs ---------------------------

BEARING_DE = {"north": "nördlich", "north-east": "nordöstlich", "east": "östlich", "south-east": "südöstlich",
              "south": "südlich", "south-west": "südwestlich", "west": "westlich", "north-west": "nordwestlich"}
BEARING_FR = {"north": "au nord", "north-east": "au nord-est", "east": "à l'est", "south-east": "au sud-est",
              "south": "au sud", "south-west": "au sud-ouest", "west": "à l'ouest", "north-west": "au nord-ouest"}
SETTING = {  # attribute -> (en, de, fr) phrase completing "It lies ..." / "Der Ort liegt ..." / "La localité se trouve ..."
    "coast": ("on the sea coast", "an der Meeresküste", "sur la côte, au bord de la mer"),
    "mountains": ("in the mountains", "in den Bergen", "dans les montagnes"),
    "river": ("on the banks of a river", "an einem Fluss", "au bord d'une rivière"),
    "lake": ("on the shore of a lake", "am Ufer eines Sees", "au bord d'un lac"),
    "forest": ("surrounded by forest", "umgeben von Wald", "entourée de forêts"),
    "fields": ("among open fields and meadows", "inmitten von Feldern und Wiesen", "au milieu des champs et des prés"),
    "desert": ("in a dry desert landscape", "in einer trockenen Wüstenlandschaft", "dans un paysage désertique et sec"),
    "snow": ("in a snowy, treeless landscape", "in einer verschneiten, baumlosen Landschaft", "dans un paysage enneigé et sans arbres"),
}
CLIMATE = {
    "tropical": ("It has a hot, humid tropical climate.", "Das Klima ist tropisch, heiß und feucht.", "Son climat est tropical, chaud et humide."),
    "warm": ("Its climate is warm and sunny.", "Das Klima ist warm und sonnig.", "Son climat est chaud et ensoleillé."),
    "temperate": ("It has a temperate climate.", "Das Klima ist gemäßigt.", "Son climat est tempéré."),
    "cold": ("Its climate is cold, with long winters.", "Das Klima ist kalt, mit langen Wintern.", "Son climat est froid, avec de longs hivers."),
    "polar": ("It has a polar climate.", "Das Klima ist polar.", "Son climat est polaire."),
}
LOOK = {
    "city": ("Its skyline is dominated by high-rise towers.", "Das Stadtbild prägen Hochhäuser.", "Des tours et des gratte-ciel dominent son paysage urbain."),
    "town": ("Its centre has streets of houses with red and grey roofs.", "Im Zentrum stehen Häuser mit roten und grauen Dächern.", "Son centre compte des rues de maisons aux toits rouges et gris."),
    "village": ("It is a small place of only a few houses.", "Der Ort besteht aus nur wenigen Häusern.", "Elle ne compte que quelques maisons."),
}
LANDMARK = {
    "church": ("its church with a tall pointed spire", "seine Kirche mit hohem, spitzem Turm", "son église au haut clocher pointu"),
    "castle": ("its stone castle with battlements", "seine steinerne Burg mit Zinnen", "son château fort de pierre crénelé"),
    "bridge": ("its old arched bridge", "seine alte Bogenbrücke", "son vieux pont en arc"),
    "lighthouse": ("its red and white lighthouse", "seinen rot-weißen Leuchtturm", "son phare rouge et blanc"),
    "harbour": ("its harbour with sailing boats", "seinen Hafen mit Segelbooten", "son port de voiliers"),
    "windmill": ("its windmill", "seine Windmühle", "son moulin à vent"),
    "tower": ("its television tower", "seinen Fernsehturm", "sa tour de télévision"),
}
_LANG_INDEX = {"en": 0, "de": 1, "fr": 2}


def _near(f: PlaceFacts, lang: str) -> str:
    near = f.scenery.near if f.scenery else None
    if near is None:
        return ""
    if lang == "en":
        return f"It lies {near.km} km {near.bearing} of {near.city}."
    if lang == "de":
        return f"Der Ort liegt {near.km} km {BEARING_DE[near.bearing]} von {near.city}."
    return f"La localité se trouve à {near.km} km {BEARING_FR[near.bearing]} de {near.city}."


def scenery_sentences(f: PlaceFacts, lang: str) -> list[str]:
    """What a photograph of the place shows, in words (empty without scenery)."""
    sc = f.scenery
    if sc is None:
        return []
    i = _LANG_INDEX[lang]
    parts = [SETTING[key][i] for key in ("coast", "mountains") if getattr(sc, key)]
    parts += [SETTING[sc.water][i]] if sc.water else []
    parts.append(SETTING[sc.cover][i])
    subject = {"en": "The place lies", "de": "Der Ort liegt", "fr": "La localité se trouve"}[lang]
    setting = f"{subject} {', '.join(parts[:-1])} {'and' if lang == 'en' else 'und' if lang == 'de' else 'et'} {parts[-1]}." if len(parts) > 1 else f"{subject} {parts[0]}."
    sentences = [s for s in (_near(f, lang), setting, LOOK[sc.settlement][i]) if s]
    if sc.landmark:
        known = {"en": "It is known for", "de": "Bekannt ist der Ort für", "fr": "Elle est connue pour"}[lang]
        sentences.append(f"{known} {LANDMARK[sc.landmark][i]}.")
    sentences.append(CLIMATE[sc.climate][i])
    return sentences


WRITERS = {"en": _en, "de": _de, "fr": _fr}


def intro(facts: PlaceFacts, lang: str) -> str:
    """The plain-text intro (what TextExtracts returns with ``exintro&explaintext``)."""
    if lang not in WRITERS:
        raise ValueError(f"no intro texts for language {lang!r}; known: {', '.join(LANGS)}")
    return WRITERS[lang](facts)


SECTION_HEADINGS = {"en": ("History", "Geography"), "de": ("Geschichte", "Geographie"), "fr": ("Histoire", "Géographie")}


def full_text(facts: PlaceFacts, lang: str) -> str:
    """The whole article as plain text: the intro, then sections a client asking for the intro must not get."""
    history, geography = SECTION_HEADINGS[lang]
    body = {
        "en": f"The history of {facts.name} is not covered by this embedded world.",
        "de": f"Die Geschichte von {facts.name} ist in dieser eingebetteten Welt nicht beschrieben.",
        "fr": f"L'histoire de {facts.name} n'est pas décrite dans ce monde intégré.",
    }[lang]
    return f"{intro(facts, lang)}\n\n\n== {history} ==\n{body}\n\n\n== {geography} ==\n{intro(facts, lang).split('. ')[-1]}"
