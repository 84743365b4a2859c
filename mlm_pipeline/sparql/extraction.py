"""Entity extraction: instances of the settlement classes that carry every modality MLM needs.

The live graph has millions of candidates for a quarter of a million survivors, so the work is
shaped to send few, cheap queries per thousand entities: candidates are listed per batch of
classes (a class too big for one answer in buckets by its QIDs' last digits), and each later
look-up runs over ``VALUES`` batches of candidates, in stages, each stage only for the
candidates that survived the one before (coordinates, then images, then articles, then the
details kept for survivors). The reference code's one query per
entity costs a round trip per entity instead.

Which constraint an entity fails first decides its dropout reason, so the stage order is the
reason order: ``no_coordinates``, ``not_on_earth``, ``no_image``, ``no_article``.

Candidates go through the stages in rounds (25,000 by default, in QID order), each
round's facts turned into Arrow rows before the next round starts: what a round learns about
its candidates, as Python objects, is all the memory extraction holds besides the finished rows,
however many candidates the graph has. A round costs at most one part-filled ``VALUES`` batch
more per stage than one pass over all candidates would.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence
from urllib.parse import unquote

import pyarrow as pa

from mlm_pipeline import schemas
from mlm_pipeline.sparql.client import Query, QueryFailed, Row, SparqlClient
from mlm_pipeline.sparql.closure import english_labels
from mlm_pipeline.sparql.queries import (
    Progress,
    check_int,
    check_languages,
    check_properties,
    check_qid,
    coordinates_query,
    countries_query,
    images_query,
    instance_classes_query,
    iter_candidates,
    labels_query,
    maybe_qid,
    qid_of,
    select_batched,
    sitelinks_query,
    wikipedia,
)

EARTH = "Q2"
LABEL_LANGUAGES = ("en", "de", "fr")  # the label_* and title_* columns of schemas.ENTITIES
FILE_PATH_MARKER = "/wiki/Special:FilePath/"
STAGE = "entities"

# Reasons, in the order the constraints are checked (the first failed one is recorded).
NO_COORDINATES = "no_coordinates"
NOT_ON_EARTH = "not_on_earth"
NO_IMAGE = "no_image"
NO_ARTICLE = "no_article"
REASONS = (NO_COORDINATES, NOT_ON_EARTH, NO_IMAGE, NO_ARTICLE)


@dataclass(frozen=True)
class ExtractionSettings:
    """What counts as an MLM entity; checked on creation so nothing is sent with a bad value."""

    languages: tuple[str, ...] = LABEL_LANGUAGES
    image_properties: tuple[str, ...] = ("P18",)
    page_size: int = 10_000  # rows per answer at most
    batch_size: int = 1_000  # candidates per VALUES block
    class_batch: int = 50  # classes per candidate listing
    candidates_per_round: int = 25_000  # candidates whose facts are held at once

    def __post_init__(self) -> None:
        object.__setattr__(self, "languages", tuple(check_languages("languages", list(self.languages), LABEL_LANGUAGES)))
        object.__setattr__(
            self, "image_properties", tuple(check_properties("image_properties", list(self.image_properties)))
        )
        check_int("page_size", self.page_size, 1, 100_000)
        check_int("batch_size", self.batch_size, 1, 5_000)
        check_int("class_batch", self.class_batch, 1, 5_000)
        check_int("candidates_per_round", self.candidates_per_round, 1, 10_000_000)


WIKIBASE = "http://wikiba.se/ontology#"
PREFERRED = WIKIBASE + "PreferredRank"
DEPRECATED = WIKIBASE + "DeprecatedRank"


@dataclass(frozen=True)
class Coordinate:
    statement: str
    rank: str | None  # wikibase rank IRI; None when the endpoint states none (normal)
    globe: str | None  # QID; None when the statement names no globe (Wikibase's default: Earth)
    lat: float
    lon: float

    @property
    def on_earth(self) -> bool:
        return self.globe in (None, EARTH)


@dataclass
class Facts:
    """What the endpoint says about one candidate, gathered stage by stage."""

    coordinates: list[Coordinate] = field(default_factory=list)
    images: dict[str, list[str]] = field(default_factory=dict)  # property -> file names
    titles: dict[str, str] = field(default_factory=dict)  # language -> sitelink title
    classes: set[str] = field(default_factory=set)
    labels: dict[str, str] = field(default_factory=dict)
    countries: dict[str, set[str]] = field(default_factory=dict)  # country QID -> P297 codes


@dataclass(frozen=True)
class Dropout:
    qid: str
    reason: str
    detail: str


def usable(coords: Sequence[Coordinate]) -> list[Coordinate]:
    """The statements a reader of Wikidata should believe: deprecated ones are known to be wrong,
    and when some are preferred the normal ones are superseded (what ``wdt:P625`` would give)."""
    kept = [c for c in coords if c.rank != DEPRECATED]
    preferred = [c for c in kept if c.rank == PREFERRED]
    return preferred or kept


def placed_at(coords: Sequence[Coordinate]) -> Coordinate | None:
    """Where an entity is placed: among its best-ranked statements on Earth, the smallest
    (lat, lon), so the choice depends on the data only, not on statement order or IDs."""
    on_earth = [c for c in usable(coords) if c.on_earth]
    return min(on_earth, key=lambda c: (c.lat, c.lon)) if on_earth else None


def check_coordinates(qid: str, facts: Facts, settings: ExtractionSettings) -> Dropout | None:
    best = usable(facts.coordinates)
    if not best:
        return Dropout(qid, NO_COORDINATES, "no coordinate location (P625) statement of non-deprecated rank")
    if placed_at(best) is None:
        globes = ", ".join(sorted({c.globe or "?" for c in best}))
        return Dropout(qid, NOT_ON_EARTH, f"best-ranked coordinates only on globe {globes}")
    return None


def ordered_images(images: dict[str, list[str]], properties: Sequence[str]) -> list[str]:
    """File names in property order, then name order, each once."""
    seen: dict[str, None] = {}
    for prop in properties:
        for name in sorted(images.get(prop, ())):
            seen.setdefault(name, None)
    return list(seen)


def check_images(qid: str, facts: Facts, settings: ExtractionSettings) -> Dropout | None:
    if ordered_images(facts.images, settings.image_properties):
        return None
    return Dropout(qid, NO_IMAGE, f"no Commons file in {', '.join(settings.image_properties)}")


def check_articles(qid: str, facts: Facts, settings: ExtractionSettings) -> Dropout | None:
    if any(lang in facts.titles for lang in settings.languages):
        return None
    return Dropout(qid, NO_ARTICLE, f"no Wikipedia article in {', '.join(settings.languages)}")


def entity_row(qid: str, facts: Facts, settings: ExtractionSettings, class_labels: dict[str, str]) -> dict:
    coordinate = placed_at(facts.coordinates)
    assert coordinate is not None, f"{qid} was judged an entity without a coordinate"
    classes = sorted(facts.classes)
    country = min(facts.countries) if facts.countries else None
    codes = sorted(facts.countries.get(country, ())) if country else []
    return {
        "qid": qid,
        **{f"label_{lang}": facts.labels.get(lang) for lang in LABEL_LANGUAGES},
        "lat": coordinate.lat,
        "lon": coordinate.lon,
        "classes": classes,
        "class_labels": [class_labels.get(c) or "" for c in classes],
        "images": ordered_images(facts.images, settings.image_properties),
        **{f"title_{lang}": facts.titles.get(lang) for lang in LABEL_LANGUAGES},
        "country_qid": country,
        "country_code": codes[0] if codes else None,
    }


def file_name(value: str) -> str | None:
    """The Commons file name of an image value (a Special:FilePath IRI); None for anything else.

    MediaWiki leaves '/' unescaped in such IRIs, so everything after the marker is the name;
    underscores are spaces in Commons titles (some dumps write them), so they become spaces.
    """
    _, marker, tail = value.partition(FILE_PATH_MARKER)
    if not marker or not tail:
        return None
    return unquote(tail).replace("_", " ")


@dataclass
class Extraction:
    entities: pa.Table
    dropouts: pa.Table
    candidates: int

    def dropout_counts(self) -> Counter:
        return Counter(self.dropouts.column("reason").to_pylist())


class _Run:
    """One round of an extraction: its candidates' facts, filled in stage by stage."""

    def __init__(
        self,
        client: SparqlClient,
        settings: ExtractionSettings,
        log: logging.Logger | logging.LoggerAdapter,
        candidates: Sequence[str],
    ):
        self.client = client
        self.settings = settings
        self.log = log
        self.facts: dict[str, Facts] = {qid: Facts() for qid in candidates}
        self.dropouts: list[Dropout] = []

    def lookup(self, what: str, keys: list[str], build: Callable[..., Query]) -> Iterable[Row]:
        progress = Progress(self.log, what)
        yield from select_batched(self.client, keys, build, self.settings.batch_size, self.settings.page_size, progress)
        progress.finish()

    def about(self, row: Row, source: str) -> Facts:
        """The facts of the candidate a row is about; a row about anything else is a bad answer."""
        qid = qid_of(row["item"].value, source) if "item" in row else ""
        if qid not in self.facts:
            raise QueryFailed(f"{source}: answer row about {qid or 'nothing'}, which was not asked for")
        return self.facts[qid]

    def keep(self, keys: list[str], check: Callable[[str, Facts, ExtractionSettings], Dropout | None]) -> list[str]:
        kept = []
        for qid in keys:
            dropout = check(qid, self.facts[qid], self.settings)
            if dropout is None:
                kept.append(qid)
            else:
                self.dropouts.append(dropout)
                del self.facts[qid]
        return kept

    def coordinates(self, keys: list[str]) -> list[str]:
        for row in self.lookup("coordinates", keys, coordinates_query):
            facts = self.about(row, "entities.coordinates")
            globe = maybe_qid(row["globe"].value) if "globe" in row else None
            rank = row["rank"].value if "rank" in row else None
            try:
                lat, lon = float(row["lat"].value), float(row["lon"].value)
            except ValueError:
                raise QueryFailed(
                    f"entities.coordinates: {row['item'].value} has a non-numeric coordinate "
                    f"{row['lat'].value!r}, {row['lon'].value!r}"
                ) from None
            facts.coordinates.append(Coordinate(row["statement"].value, rank, globe, lat, lon))
        return self.keep(keys, check_coordinates)

    def images(self, keys: list[str]) -> list[str]:
        props = self.settings.image_properties
        build = lambda batch, limit, offset: images_query(batch, props, limit, offset)  # noqa: E731
        for row in self.lookup("images", keys, build):
            facts = self.about(row, "entities.images")
            name = file_name(row["file"].value)
            if name is not None:
                facts.images.setdefault(row["property"].value, []).append(name)
        return self.keep(keys, check_images)

    def articles(self, keys: list[str]) -> list[str]:
        # Titles in every language with a column, whichever languages make an entity count.
        build = lambda batch, limit, offset: sitelinks_query(batch, LABEL_LANGUAGES, limit, offset)  # noqa: E731
        site_language = {wikipedia(lang): lang for lang in LABEL_LANGUAGES}
        for row in self.lookup("articles", keys, build):
            titles = self.about(row, "entities.sitelinks").titles
            lang, title = site_language[row["site"].value], row["title"].value
            if lang not in titles or title < titles[lang]:
                titles[lang] = title
        return self.keep(keys, check_articles)

    def details(self, keys: list[str]) -> None:
        for row in self.lookup("classes", keys, instance_classes_query):
            cls = maybe_qid(row["class"].value)
            if cls is not None:  # "unknown value" classes name no class
                self.about(row, "entities.classes").classes.add(cls)
        build = lambda batch, limit, offset: labels_query(batch, LABEL_LANGUAGES, limit, offset)  # noqa: E731
        for row in self.lookup("labels", keys, build):
            labels = self.about(row, "labels").labels
            lang, label = row["label"].lang or "", row["label"].value
            if lang not in labels or label < labels[lang]:
                labels[lang] = label
        for row in self.lookup("countries", keys, countries_query):
            country = maybe_qid(row["country"].value)
            if country is not None:
                codes = self.about(row, "entities.countries").countries.setdefault(country, set())
                if "code" in row:
                    codes.add(row["code"].value)


def extract_entities(
    client: SparqlClient,
    classes: Sequence[str],
    settings: ExtractionSettings,
    class_labels: dict[str, str] | None = None,
    log: logging.Logger | logging.LoggerAdapter | None = None,
) -> Extraction:
    """``entities`` and ``entity_dropouts`` for the instances of ``classes``.

    ``class_labels`` are the English labels already known (the closure's); labels of the other
    classes an entity has are looked up once per class, not once per entity.
    """
    log = log or logging.getLogger(__name__)
    classes = sorted({check_qid("classes", c) for c in classes})
    progress = Progress(log, "candidates")
    candidates = sorted(set(iter_candidates(client, classes, settings.class_batch, settings.page_size, progress)))
    progress.finish()
    log.info("%d candidates among the instances of %d classes", len(candidates), len(classes))

    labels = dict(class_labels or {})
    entities, dropouts, reasons = [], [], Counter()
    for start in range(0, len(candidates), settings.candidates_per_round):
        round_candidates = candidates[start : start + settings.candidates_per_round]
        run = _Run(client, settings, log, round_candidates)
        kept = run.coordinates(round_candidates)
        kept = run.images(kept)
        kept = run.articles(kept)
        run.details(kept)
        missing = sorted({c for q in kept for c in run.facts[q].classes} - set(labels))
        labels.update(english_labels(client, missing, settings.batch_size, settings.page_size))
        rows = [entity_row(qid, run.facts[qid], settings, labels) for qid in kept]
        entities.append(pa.Table.from_pylist(rows, schema=schemas.ENTITIES))
        dropouts.append(pa.Table.from_pylist(
            [{"qid": d.qid, "item": "", "stage": STAGE, "reason": d.reason, "detail": d.detail} for d in run.dropouts],
            schema=schemas.DROPOUTS,
        ))
        reasons.update(d.reason for d in run.dropouts)
    kept_rows = sum(t.num_rows for t in entities)
    log.info("%d entities kept of %d candidates; dropped: %s", kept_rows, len(candidates), dict(reasons))
    return Extraction(
        entities=schemas.sort_table(pa.concat_tables([schemas.ENTITIES.empty_table(), *entities]), "entities"),
        dropouts=schemas.sort_table(pa.concat_tables([schemas.DROPOUTS.empty_table(), *dropouts]), "entity_dropouts"),
        candidates=len(candidates),
    )
