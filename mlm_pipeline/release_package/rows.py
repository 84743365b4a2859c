"""One packaged row per entity of a dataset version: what a user of MLM loads.

The rows are joined in DuckDB from the release's stored tables, read in place, and come out
sorted by split and entity, a bounded batch at a time, so packaging holds one batch of rows and
their images however large the release is. Image bytes are not part of the query: each batch's
images are read through the ``read_image`` function the caller gives (the release's storage
decides where bytes live), and become Hugging Face ``datasets``' ``Image`` struct ``{bytes,
path}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import duckdb
import pyarrow as pa

from mlm_pipeline import schemas
from mlm_pipeline.download.validate import SVG_SUFFIXES
from mlm_pipeline.geo.versions import SPLIT_NAMES

STR = pa.string()
SUMMARY = pa.struct([("lang", STR), ("title", STR), ("text", STR), ("revision", pa.int64())])
IMAGE = pa.struct([("bytes", pa.binary()), ("path", STR)])
"""The layout ``datasets`` reads as its ``Image`` feature (the path: the Commons file name)."""
IMAGE_FILE = pa.struct(
    [
        ("file_name", STR),
        ("sha256", STR),  # of the packaged thumbnail's bytes
        ("license", STR),
        ("license_url", STR),
        ("attribution", STR),  # the credit line: Commons' Attribution, else Artist, else Credit
        ("attribution_required", pa.bool_()),
        ("description_url", STR),
    ]
)
ROW = pa.schema(
    [
        *(schemas.ENTITIES.field(name) for name in ("qid", "label_en", "label_de", "label_fr")),
        # The version's own: coordinates, country by coordinates, its geo-cell (null in MLM).
        *(schemas.VERSION.field(name) for name in ("lat", "lon", "country_code", "continent", "cell")),
        ("cell_token", STR),
        *(schemas.ENTITIES.field(name) for name in ("classes", "class_labels")),
        ("summaries", pa.list_(SUMMARY)),
        ("images", pa.list_(IMAGE)),
        ("image_files", pa.list_(IMAGE_FILE)),  # one per image, in the same order
    ]
)
DESCRIPTIONS = {
    "qid": "the entity's id in the knowledge graph (Wikidata QID)",
    "label_en": "English label (null when none)",
    "label_de": "German label (null when none)",
    "label_fr": "French label (null when none)",
    "lat": "latitude (degrees, WGS84)",
    "lon": "longitude (degrees, WGS84)",
    "country_code": "ISO 3166-1 alpha-2 code of the country at the coordinates",
    "continent": "continent code at the coordinates (EU, NA, AS, SA, AF, OC, AN)",
    "cell": "geo-cell class label of this version (null in MLM)",
    "cell_token": "S2 token of that cell (null in MLM)",
    "classes": "the entity's classes (instance of), Wikidata QIDs",
    "class_labels": "English label of each class",
    "summaries": "Wikipedia introduction per language: lang, article title, plain text, the article's revision id",
    "lang": "Wikipedia language code",
    "title": "the article's title",
    "text": "the article's introduction, plain text",
    "revision": "the article's revision the text was taken from (null when the API gave none)",
    "images": "the entity's images (Commons thumbnails) as Image features",
    "image_files": "per image: Commons file name, sha256, licence, licence URL, credit line, "
    "whether attribution is required, Commons description page",
    "bytes": "the image file (JPEG or PNG)",
    "path": "its Commons file name",
}

CELLS_OF = {"mlm": None, "mlm_irle": "geo_cells", "mlm_irle_gr": "mlm_irle_gr_cells"}
IMAGE_COLUMNS = ("file_name", "sha256", "format", "license", "license_url", "attribution", "attribution_required",
                 "description_url", "artist", "credit", "commons_sha1")

ReadImage = Callable[[Mapping[str, Any]], bytes]
"""An image's bytes from its row of the ``images`` table (``IMAGE_COLUMNS``: ``sha256`` names them)."""


def _svg_named(column: str) -> str:
    return " OR ".join(f"lower({column}) LIKE '%{suffix}'" for suffix in SVG_SUFFIXES)


def kept_images(version: str) -> str:
    """The image rows a version counts (schemas.VERSION ``n_images``): the rasters that passed
    the filter and, in MLM, the SVG files as well (Commons serves their thumbnails as PNG)."""
    if version == "mlm":
        return f"""(SELECT * FROM images_filtered UNION ALL
                    SELECT * FROM images WHERE format = 'SVG' OR {_svg_named('file_name')})"""
    return "images_filtered"


SPLIT_ORDER = "CASE s.split " + " ".join(f"WHEN '{n}' THEN {i}" for i, n in enumerate(SPLIT_NAMES)) + " END"


def _members(version: str) -> str:
    """The version's entities with their split and the split's place in the package."""
    return f"""(SELECT v.qid, s.split, {SPLIT_ORDER} AS split_order FROM {version} v
                JOIN splits s ON s.qid = v.qid AND s.version = '{version}')"""


def entity_query(version: str) -> str:
    cells = CELLS_OF[version]
    token = "c.token" if cells else "NULL::VARCHAR"
    join_cells = f"LEFT JOIN {cells} c ON c.cell = v.cell" if cells else ""
    return f"""
        SELECT m.split, v.qid, e.label_en, e.label_de, e.label_fr, v.lat, v.lon, v.country_code, v.continent,
               v.cell, {token} AS cell_token, e.classes, e.class_labels
        FROM {version} v JOIN {_members(version)} m ON m.qid = v.qid JOIN entities e ON e.qid = v.qid {join_cells}
        ORDER BY m.split_order, v.qid"""


def summary_query(version: str) -> str:
    """The summaries a version counts (non-empty ones), in the entity stream's order."""
    return f"""
        SELECT t.qid, t.lang, t.title, t.text, t.revision FROM summaries t JOIN {_members(version)} m ON m.qid = t.qid
        WHERE trim(coalesce(t.text, '')) <> '' ORDER BY m.split_order, t.qid, t.lang"""


def image_query(version: str) -> str:
    columns = ", ".join(f"k.{c}" for c in IMAGE_COLUMNS)
    return f"""
        SELECT k.qid, {columns} FROM {kept_images(version)} k JOIN {_members(version)} m ON m.qid = k.qid
        ORDER BY m.split_order, k.qid, k.file_name"""


def _rows(con: duckdb.DuckDBPyConnection, query: str, batch_rows: int) -> Iterator[dict[str, Any]]:
    """A query's rows one at a time, read a batch at a time on a connection of their own (a
    connection streams one result at a time)."""
    cursor = con.cursor()
    try:
        for batch in cursor.sql(query).to_arrow_reader(batch_rows):
            yield from batch.to_pylist()
    finally:
        cursor.close()


class _Grouped:
    """Rows of a stream sorted like the entities, taken an entity at a time."""

    def __init__(self, rows: Iterator[dict[str, Any]]) -> None:
        self.rows = rows
        self.next = next(rows, None)

    def take(self, qid: str) -> list[dict[str, Any]]:
        taken = []
        while self.next is not None and self.next["qid"] == qid:
            taken.append(self.next)
            self.next = next(self.rows, None)
        return taken


@dataclass(frozen=True)
class Batch:
    split: str
    rows: pa.Table  # ROW
    weights: list[int]  # bytes each row adds to a shard, about: images plus texts


def version_batches(
    con: duckdb.DuckDBPyConnection, version: str, read_image: ReadImage, batch_rows: int
) -> Iterator[Batch]:
    """The version's rows, split by split, at most ``batch_rows`` at a time, in stored order.

    Three sorted streams (entities, their summaries, their images) are merged an entity at a
    time: DuckDB sorts out of core, and nothing here holds more than one batch of entities."""
    summaries = _Grouped(_rows(con, summary_query(version), batch_rows))
    images = _Grouped(_rows(con, image_query(version), batch_rows))
    pending: list[dict[str, Any]] = []
    for entity in _rows(con, entity_query(version), batch_rows):
        if pending and (len(pending) == batch_rows or entity["split"] != pending[0]["split"]):
            yield _batch(pending, read_image)
            pending = []
        pending.append({**entity, "summaries": summaries.take(entity["qid"]), "images": images.take(entity["qid"])})
    if pending:
        yield _batch(pending, read_image)
    leftover = summaries.next or images.next
    if leftover is not None:
        raise ValueError(f"release_package: {version}: rows of {leftover['qid']} out of entity order; "
                         "were the tables materialised for the same release?")


def _batch(records: list[dict[str, Any]], read_image: ReadImage) -> Batch:
    columns: dict[str, list[Any]] = {name: [] for name in ROW.names}
    weights = []
    for record in records:
        images = [{"bytes": read_image(i), "path": i["file_name"]} for i in record["images"]]
        files = [{name: i[name] for name in IMAGE_FILE.names} for i in record["images"]]
        summaries = [{name: t[name] for name in SUMMARY.names} for t in record["summaries"]]
        for name in ROW.names:
            value = {"images": images, "image_files": files, "summaries": summaries}.get(name, record.get(name))
            columns[name].append(value)
        weights.append(sum(len(i["bytes"]) for i in images) + sum(len(t["text"]) for t in summaries))
    return Batch(records[0]["split"], pa.table(columns, schema=ROW), weights)


def hf_feature(kind: pa.DataType) -> Any:
    """The ``datasets`` feature of an Arrow type as ``Features.to_dict()`` writes it."""
    if kind == IMAGE:
        return {"_type": "Image"}
    if pa.types.is_list(kind):
        return {"feature": hf_feature(kind.value_type), "_type": "List"}
    if pa.types.is_struct(kind):
        return {f.name: hf_feature(f.type) for f in kind}
    dtype = {pa.string(): "string", pa.float64(): "float64", pa.int32(): "int32", pa.int64(): "int64",
             pa.bool_(): "bool"}[kind]
    return {"dtype": dtype, "_type": "Value"}


def hf_schema() -> pa.Schema:
    """ROW with the metadata ``datasets`` reads its features from, so ``images`` loads as images."""
    features = {f.name: hf_feature(f.type) for f in ROW}
    return ROW.with_metadata({"huggingface": json.dumps({"info": {"features": features}})})
