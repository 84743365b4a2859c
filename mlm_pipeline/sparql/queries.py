"""Portable SPARQL 1.1 for the extraction: checked configuration in, complete pages out.

Only standard SPARQL 1.1 is used (no ``SERVICE wikibase:label``, no ``{1,3}`` path ranges), so
the same text runs on query.wikidata.org, QLever or Oxigraph loaded from a dump, and the embedded
world. Every value that reaches a query text is either checked here against a strict pattern
(configuration) or re-checked as a Wikidata item IRI (values read back from the endpoint), so
neither a configuration file nor a hostile endpoint can inject SPARQL.

Paging is chosen so that the answer cannot depend on the page size: a listing of candidates that
does not fit a page is split into disjoint buckets by the QIDs' last digits (see
``iter_candidates``); look-ups over a ``VALUES`` batch are sent unordered (sorting costs the
engine more than the look-up) and a batch whose answer does not fit one page is halved until it
does, a single key with a larger answer paging by ``ORDER BY`` over every projected variable
plus ``LIMIT``/``OFFSET`` (a total order, so pages neither overlap nor skip). Each query asks for one row more than it keeps, which tells "complete" from "cut
off" without an extra query.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Literal, Sequence

from mlm_pipeline.endpoints import ConfigError, Endpoints
from mlm_pipeline.sparql.client import Query, QueryFailed, Row, SparqlClient

WD = "http://www.wikidata.org/entity/"
PREFIXES = """PREFIX wd: <http://www.wikidata.org/entity/>
PREFIX wdt: <http://www.wikidata.org/prop/direct/>
PREFIX p: <http://www.wikidata.org/prop/>
PREFIX psv: <http://www.wikidata.org/prop/statement/value/>
PREFIX wikibase: <http://wikiba.se/ontology#>
PREFIX schema: <http://schema.org/>
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
"""

MAX_QID_DIGITS = 12
QID_RE = re.compile(r"Q[1-9][0-9]{0,11}")
DIGITS_RE = re.compile(r"[0-9]{1,12}")
PID_RE = re.compile(r"P[1-9][0-9]{0,8}")
LANG_RE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{2,8})*")
# Host, optional port, optional path of unreserved/percent-encoded characters; no query string,
# fragment, quotes, spaces or angle brackets.
ENDPOINT_RE = re.compile(
    r"https?://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(:[0-9]{1,5})?"
    r"(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?"
)
Cadence = Literal["daily", "weekly", "iso_week"]
CADENCES: tuple[Cadence, ...] = ("daily", "weekly", "iso_week")
"""How a source's release keys follow its data version (``release_key``)."""

VERSION_RE = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})(T[0-9:.]+(Z|[+-][0-9]{2}:?[0-9]{2})?)?")


# ---------------------------------------------------------------- configuration checks


def check_qid(field: str, value: object) -> str:
    if not isinstance(value, str) or not QID_RE.fullmatch(value):
        raise ConfigError(f"{field}={value!r} is not a Wikidata item ID (Q followed by digits, e.g. Q486972)")
    return value


def check_properties(field: str, values: Sequence[object]) -> list[str]:
    if isinstance(values, str) or not values:
        raise ConfigError(f"{field}={values!r} must be a non-empty list of property IDs (e.g. ['P18'])")
    for value in values:
        if not isinstance(value, str) or not PID_RE.fullmatch(value):
            raise ConfigError(f"{field}: {value!r} is not a Wikidata property ID (P followed by digits)")
    if len(set(values)) != len(values):
        raise ConfigError(f"{field}={list(values)!r} names a property twice")
    return list(values)  # type: ignore[arg-type]


def check_languages(field: str, values: Sequence[object], allowed: Sequence[str]) -> list[str]:
    """Language codes, each a plain code and one that the output table has a column for."""
    if isinstance(values, str) or not values:
        raise ConfigError(f"{field}={values!r} must be a non-empty list of language codes")
    for value in values:
        if not isinstance(value, str) or not LANG_RE.fullmatch(value):
            raise ConfigError(f"{field}: {value!r} is not a language code (e.g. 'en')")
        if value not in allowed:
            raise ConfigError(f"{field}: {value!r} has no column in the table; use some of {list(allowed)}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{field}={list(values)!r} names a language twice")
    return list(values)  # type: ignore[arg-type]


def check_digits(field: str, value: str) -> str:
    if not DIGITS_RE.fullmatch(value):
        raise ValueError(f"{field}={value!r} must be 1 to {MAX_QID_DIGITS} digits")
    return value


def check_language(value: str) -> str:
    if not LANG_RE.fullmatch(value):
        raise ConfigError(f"language {value!r} is not a language code (e.g. 'en')")
    return value


def check_int(field: str, value: object, least: int, most: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
        raise ConfigError(f"{field}={value!r} must be a whole number from {least} to {most}")
    return value


def check_endpoint(field: str, value: object) -> str:
    if not isinstance(value, str) or not ENDPOINT_RE.fullmatch(value):
        raise ConfigError(
            f"{field}={value!r} is not a plain http(s) endpoint URL "
            "(scheme, host, optional port and path; no spaces, quotes, query or fragment)"
        )
    return value


# ---------------------------------------------------------------- values read back


def qid_of(term_value: str, source: str) -> str:
    """The QID of an item IRI from an answer; anything else is a malformed answer from ``source``."""
    if term_value.startswith(WD) and QID_RE.fullmatch(term_value[len(WD) :]):
        return term_value[len(WD) :]
    raise QueryFailed(f"{source}: expected a Wikidata item IRI, got {term_value[:100]!r}")


def maybe_qid(term_value: str) -> str | None:
    """The QID when the value is an item IRI; None for unknown values and other IRIs."""
    if term_value.startswith(WD) and QID_RE.fullmatch(term_value[len(WD) :]):
        return term_value[len(WD) :]
    return None


def _values(var: str, qids: Iterable[str]) -> str:
    items = " ".join(f"wd:{check_qid('values', q)}" for q in qids)
    return f"VALUES ?{var} {{ {items} }}"


def _string(value: str) -> str:
    """A SPARQL string literal; the caller has already restricted ``value`` to safe characters."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------- query texts


def dataset_version_query() -> Query:
    return Query(
        "dataset_version",
        PREFIXES + "SELECT ?version WHERE { <http://www.wikidata.org> schema:dateModified ?version }",
        ("version",),
    )


def _lookup(name: str, variables: tuple[str, ...], body: str, limit: int, offset: int | None) -> Query:
    """A look-up over a ``VALUES`` batch.

    Unordered when ``offset`` is None: the cheapest form, used when the whole answer fits one
    page (the caller splits a batch whose answer does not). Otherwise DISTINCT rows ordered by
    every projected variable, so LIMIT/OFFSET pages neither overlap nor skip.
    """
    projected = " ".join(f"?{v}" for v in variables)
    if offset is None:
        head, tail = f"SELECT {projected}", f"LIMIT {limit}"
    else:
        head, tail = f"SELECT DISTINCT {projected}", f"ORDER BY {projected}\nLIMIT {limit} OFFSET {offset}"
    return Query(name, f"{PREFIXES}{head} WHERE {{\n{body}}}\n{tail}", variables)


def subclasses_query(parents: Sequence[str], limit: int, offset: int | None = None) -> Query:
    """One ``wdt:P279`` hop below ``parents``: the BFS walks the graph one level per round."""
    body = f"  {_values('parent', parents)}\n  ?child wdt:P279 ?parent .\n"
    return _lookup("classes.subclasses", ("child", "parent"), body, limit, offset)


def labels_query(qids: Sequence[str], languages: Sequence[str], limit: int, offset: int | None = None) -> Query:
    langs = ", ".join(_string(check_language(lang)) for lang in languages)
    body = f"  {_values('item', qids)}\n  ?item rdfs:label ?label .\n  FILTER(LANG(?label) IN ({langs}))\n"
    return _lookup("labels", ("item", "label"), body, limit, offset)


def candidates_query(classes: Sequence[str], limit: int, suffix: str = "", exact: Sequence[str] = ()) -> Query:
    """Instances of a batch of classes, unordered (the engine stops after ``limit`` rows), in
    one bucket: items whose QID digits end with ``suffix``, plus the items ``exact`` (digits)."""
    conditions = [f"STRENDS(STR(?item), {_string(check_digits('suffix', suffix))})"] if suffix else []
    conditions += [f"STR(?item) = {_string(WD + 'Q' + check_digits('exact', digits))}" for digits in exact]
    bucket = f"  FILTER({' || '.join(conditions)})\n" if conditions else ""
    text = (
        PREFIXES
        + "SELECT DISTINCT ?item WHERE {\n"
        + f"  {_values('class', classes)}\n"
        + "  ?item wdt:P31 ?class .\n"
        + bucket
        + f"}}\nLIMIT {limit}"
    )
    return Query("entities.candidates", text, ("item",))


def coordinates_query(items: Sequence[str], limit: int, offset: int | None = None) -> Query:
    """Every coordinate statement with its rank and globe: which one places the entity is a rule
    of ours (see ``extraction.placed_at``), not something to leave to ``wdt:P625``."""
    body = (
        f"  {_values('item', items)}\n"
        "  ?item p:P625 ?statement .\n"
        "  ?statement psv:P625 ?value .\n"
        "  ?value wikibase:geoLatitude ?lat ; wikibase:geoLongitude ?lon .\n"
        "  OPTIONAL { ?statement wikibase:rank ?rank }\n"
        "  OPTIONAL { ?value wikibase:geoGlobe ?globe }\n"
    )
    return _lookup("entities.coordinates", ("item", "statement", "rank", "globe", "lat", "lon"), body, limit, offset)


def images_query(items: Sequence[str], properties: Sequence[str], limit: int, offset: int | None = None) -> Query:
    """One UNION branch per property: a constant predicate lets every engine start from the
    items (Oxigraph, given ``VALUES ?property``, scans all values of the property instead)."""
    branches = " UNION ".join(
        f"{{ ?item wdt:{p} ?file BIND({_string(p)} AS ?property) }}"
        for p in check_properties("image_properties", properties)
    )
    body = f"  {_values('item', items)}\n  {branches}\n"
    return _lookup("entities.images", ("item", "property", "file"), body, limit, offset)


def wikipedia(lang: str) -> str:
    """The site IRI of a language's Wikipedia, as sitelinks name it with ``schema:isPartOf``."""
    return f"https://{lang}.wikipedia.org/"


def sitelinks_query(items: Sequence[str], languages: Sequence[str], limit: int, offset: int | None = None) -> Query:
    """Wikipedia articles only: the site decides, since Wikivoyage shares the language tag.
    The sites are a FILTER rather than VALUES so that engines start from the items."""
    sites = ", ".join(f"<{wikipedia(check_language(lang))}>" for lang in languages)
    body = (
        f"  {_values('item', items)}\n"
        "  ?article schema:about ?item ; schema:isPartOf ?site ; schema:name ?title .\n"
        f"  FILTER(?site IN ({sites}))\n"
    )
    return _lookup("entities.sitelinks", ("item", "site", "title"), body, limit, offset)


def instance_classes_query(items: Sequence[str], limit: int, offset: int | None = None) -> Query:
    body = f"  {_values('item', items)}\n  ?item wdt:P31 ?class .\n"
    return _lookup("entities.classes", ("item", "class"), body, limit, offset)


def countries_query(items: Sequence[str], limit: int, offset: int | None = None) -> Query:
    body = f"  {_values('item', items)}\n  ?item wdt:P17 ?country .\n  OPTIONAL {{ ?country wdt:P297 ?code }}\n"
    return _lookup("entities.countries", ("item", "country", "code"), body, limit, offset)


# ---------------------------------------------------------------- running them


@dataclass
class Progress:
    """Logs counts and rates at a steady pace, however fast or slow the pages come."""

    log: logging.Logger | logging.LoggerAdapter
    what: str
    every_s: float = 10.0
    done: int = 0
    rows: int = 0
    pages: int = 0

    def __post_init__(self) -> None:
        self._start = self._last = time.monotonic()

    def add(self, done: int = 0, rows: int = 0, pages: int = 0) -> None:
        self.done += done
        self.rows += rows
        self.pages += pages
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._report("progress", now)

    def finish(self) -> None:
        self._report("done", time.monotonic())

    def _report(self, state: str, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        self.log.info(
            "%s %s: %d items, %d rows, %d pages in %.1f s (%.0f items/s, %.0f rows/s)",
            self.what,
            state,
            self.done,
            self.rows,
            self.pages,
            elapsed,
            self.done / elapsed,
            self.rows / elapsed,
        )


def select_all(client: SparqlClient, build: Callable[[int, int], Query], page_size: int) -> list[Row]:
    """Every row of an ordered query, page by page (one row more than kept marks the last page)."""
    rows: list[Row] = []
    offset = 0
    while True:
        page = client.select(build(page_size + 1, offset))
        rows.extend(page[:page_size])
        if len(page) <= page_size:
            return rows
        offset += page_size


Lookup = Callable[[Sequence[str], int, "int | None"], Query]


def select_lookup(client: SparqlClient, keys: Sequence[str], build: Lookup, page_size: int) -> list[Row]:
    """Every row for ``keys``: one unordered query when the answer fits a page, else the batch
    is halved until it does; a single key whose answer is larger pages in order."""
    rows = client.select(build(keys, page_size + 1, None))
    if len(rows) <= page_size:
        return rows
    if len(keys) > 1:
        middle = len(keys) // 2
        return select_lookup(client, keys[:middle], build, page_size) + select_lookup(
            client, keys[middle:], build, page_size
        )
    return select_all(client, lambda limit, offset: build(keys, limit, offset), page_size)


def select_batched(
    client: SparqlClient,
    keys: Sequence[str],
    build: Lookup,
    batch_size: int,
    page_size: int,
    progress: Progress | None = None,
) -> Iterator[Row]:
    """Rows of a look-up for every key, ``batch_size`` keys per ``VALUES`` block."""
    for start in range(0, len(keys), batch_size):
        batch = keys[start : start + batch_size]
        rows = select_lookup(client, batch, build, page_size)
        if progress is not None:
            progress.add(done=len(batch), rows=len(rows), pages=1)
        yield from rows


def iter_candidates(
    client: SparqlClient,
    classes: Sequence[str],
    class_batch: int,
    page_size: int,
    progress: Progress | None = None,
) -> Iterator[str]:
    """QIDs of instances of ``classes`` (an item may recur across class batches), never sorted.

    A batch of classes is asked unordered; when its answer does not fit a page the batch is
    halved, and a single class still too big is split into ten buckets by the last digit of
    the QID, then the last two digits, and so on. Buckets are disjoint and together complete
    (the item whose digits equal a bucket's suffix exactly rides along with the "0" child), and
    QIDs' last digits are close to uniform, so each split divides the work by about ten. A
    keyset listing would have to sort every page; sorting 55,000 IRIs takes Oxigraph 20 s, a
    bucket's filtered scan about one.
    """

    def listing(batch: Sequence[str], suffix: str = "", exact: tuple[str, ...] = ()) -> Iterator[str]:
        query = candidates_query(batch, page_size + 1, suffix, exact)
        page = client.select(query)
        if len(page) <= page_size:
            qids = []
            for row in page:
                if "item" not in row:
                    raise QueryFailed(f"query {query.label}: a row without ?item")
                qids.append(qid_of(row["item"].value, f"query {query.label}"))
            if progress is not None:
                progress.add(done=len(qids), rows=len(page), pages=1)
            yield from qids
        elif len(batch) > 1:
            middle = len(batch) // 2
            yield from listing(batch[:middle], suffix, exact)
            yield from listing(batch[middle:], suffix, exact)
        elif len(suffix) >= MAX_QID_DIGITS:
            raise QueryFailed(
                f"query {query.label}: more than {page_size} items in one bucket of class {batch[0]} "
                "that cannot be split further; use a larger page_size"
            )
        else:
            carried = exact + ((suffix,) if suffix and not suffix.startswith("0") else ())
            for digit in "0123456789":
                yield from listing(batch, digit + suffix, carried if digit == "0" else ())

    for start in range(0, len(classes), class_batch):
        yield from listing(classes[start : start + class_batch])


def fetch_dataset_version(endpoints: Endpoints, client: SparqlClient | None = None) -> str:
    """The endpoint's ``<http://www.wikidata.org> schema:dateModified``, e.g. ``2026-01-05T00:00:00Z``."""
    check_endpoint("sparql_url", endpoints.sparql_url)
    own = client is None
    client = client or SparqlClient(endpoints.sparql_url, endpoints.user_agent)
    try:
        query = dataset_version_query()
        values = sorted({row["version"].value for row in client.select(query) if "version" in row})
    finally:
        if own:
            client.close()
    if len(values) != 1:
        raise QueryFailed(
            f"query {query.label} against {endpoints.sparql_url}: expected one dataset version "
            f"(<http://www.wikidata.org> schema:dateModified), got {values or 'none'}"
        )
    release_key(values[0])
    return values[0]


def release_key(version: str, cadence: Cadence = "daily") -> str:
    """The release partition key of a dataset version.

    ``daily``: its date (``2026-01-07``), one release per data version; right for a fixed
    graph (the embedded world, a dump). Live Wikidata's data version changes every day, so a
    live source takes one release per period instead: ``weekly``, the Monday on or before it
    (``2026-01-05``), the day Wikidata's weekly entity dumps are dated by, or ``iso_week``
    (``2026-W02``). Keys of every cadence sort in time order."""
    match = VERSION_RE.fullmatch(version.strip())
    if not match:
        raise ValueError(f"dataset version {version!r} is not an xsd:dateTime like 2026-01-05T00:00:00Z")
    day = dt.date.fromisoformat(match.group(1))
    if cadence == "daily":
        return match.group(1)
    if cadence == "weekly":
        return (day - dt.timedelta(days=day.weekday())).isoformat()
    if cadence == "iso_week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    raise ValueError(f"release cadence {cadence!r}: use one of {CADENCES}")


def check_release(version: str, partition_key: str, mismatch_allowed: bool, cadence: Cadence = "daily") -> str:
    """The endpoint must serve the release being built, or a run would mislabel its data.

    Live Wikidata moves on every minute, so a build from it may opt out of the check; the
    embedded world and a dump are fixed and must match. With a weekly cadence any day of the
    release's week matches.
    """
    served = release_key(version, cadence)
    if served != partition_key and not mismatch_allowed:
        raise ValueError(
            f"the endpoint serves dataset version {version} (release {served}), but the run builds "
            f"release {partition_key}: register and build release {served}, point the source at the "
            f"dump of release {partition_key}, or (live or own endpoints only) set allow_version_mismatch"
        )
    return served
