"""From the pipeline's tables to feature tables: which rows are encoded, in which order, in
bounded rounds.

Only entities of MLM-irle are encoded: training and evaluation use MLM-irle and MLM-irle-gr,
and MLM-irle-gr is a sample of MLM-irle, so features for the rest of MLM would be computed and
never read (on the paper's data that is a quarter of the images). Rows come out of DuckDB
sorted by the output key and are encoded a round at a time (a round's bytes, pixels and vectors
are all a process holds), so memory does not grow with the release; the same rows give the same
rounds, and so the same bytes.

The loop is the same for any encoder: a round of inputs (image bytes read by their sha256, or
texts) goes through ``encode_images`` or ``TextEncoder.encode``, its vectors go out as a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import duckdb
import pyarrow as pa
import torch

from mlm_pipeline import schemas, sql
from mlm_pipeline.encoders.image import ImageEncoder, encode_images
from mlm_pipeline.encoders.progress import Progress
from mlm_pipeline.encoders.text import TextEncoder
from mlm_pipeline.encoders.vectors import to_vector_array
from mlm_pipeline.shards import TableStream

Log = Callable[[str], None]
IMAGES_PER_ROUND = 1024
TEXTS_PER_ROUND = 2048
IN_VERSION = "SEMI JOIN (SELECT qid FROM version) USING (qid)"


class FeatureInputError(ValueError):
    """An input table that lacks what the features need."""


def require_columns(con: duckdb.DuckDBPyConnection, view: str, columns: list[str], name: str) -> None:
    present = [row[0] for row in con.execute(f"DESCRIBE {view}").fetchall()]
    missing = [c for c in columns if c not in present]
    if missing:
        raise FeatureInputError(f"{name} lacks columns {missing} (has {present})")


@dataclass
class ImageFeatureStats:
    """What encoding found, complete once the stream is read."""

    rows: int = 0
    dropouts: list[tuple[str, str, str, str, str]] = field(default_factory=list)  # schemas.DROPOUTS rows
    seconds: float = 0.0

    def dropout_table(self) -> pa.Table:
        table = pa.Table.from_pylist([dict(zip(schemas.DROPOUTS.names, row)) for row in self.dropouts],
                                     schema=schemas.DROPOUTS)
        return schemas.sort_table(table, "image_feature_dropouts")


def image_feature_stream(
    con: duckdb.DuckDBPyConnection,
    read: Callable[[str], bytes],
    encoder: ImageEncoder,
    *,
    device: torch.device,
    batch_size: int,
    workers: int,
    log: Log | None = None,
) -> tuple[TableStream, ImageFeatureStats]:
    """IMAGE_FEATURES of the ``images_filtered`` rows whose entity is in the ``version`` view,
    a round at a time; images that will not decode are collected in the stats as dropouts."""
    require_columns(con, "images_filtered", ["qid", "file_name", "sha256"], "images_filtered")
    require_columns(con, "version", ["qid"], "dataset version")
    if encoder.dim != schemas.IMAGE_FEATURE_DIM:
        raise FeatureInputError(f"image encoder gives {encoder.dim} dims, the table holds {schemas.IMAGE_FEATURE_DIM}")
    rows = f"SELECT qid, file_name, sha256 FROM images_filtered {IN_VERSION} ORDER BY qid, file_name"
    progress = Progress("image features", int(sql.scalar(con, f"SELECT count(*) FROM ({rows})")), log)
    stats = ImageFeatureStats()

    def batches() -> Iterator[pa.RecordBatch]:
        for chunk in con.sql(rows).to_arrow_reader(IMAGES_PER_ROUND):
            contents = [read(sha256) for sha256 in chunk.column("sha256").to_pylist()]
            encoding = encode_images(encoder, contents, device=device, batch_size=batch_size, workers=workers,
                                     progress=progress)
            stats.seconds += encoding.seconds
            qids, names = chunk.column("qid"), chunk.column("file_name")
            stats.dropouts += [(qids[i].as_py(), names[i].as_py(), "image_features", "undecodable", reason)
                               for i, reason in encoding.failures]
            kept = pa.array(encoding.indices, pa.int64())
            stats.rows += len(kept)
            yield pa.RecordBatch.from_arrays(
                [qids.take(kept), names.take(kept), to_vector_array(encoding.vectors)], schema=schemas.IMAGE_FEATURES)
        progress.finish()

    return TableStream(schemas.IMAGE_FEATURES, batches()), stats


def text_feature_stream(con: duckdb.DuckDBPyConnection, encoder: TextEncoder, log: Log | None = None) -> TableStream:
    """One vector per (entity, language) summary of the ``summaries`` view whose entity is in
    the ``version`` view, a round of texts at a time."""
    require_columns(con, "summaries", ["qid", "lang", "text"], "summaries")
    require_columns(con, "version", ["qid"], "dataset version")
    rows = f"SELECT qid, lang, coalesce(text, '') AS text FROM summaries {IN_VERSION} ORDER BY qid, lang"
    progress = Progress("text features: summaries", int(sql.scalar(con, f"SELECT count(*) FROM ({rows})")), log)
    schema = schemas.text_features_schema(encoder.dim)

    def batches() -> Iterator[pa.RecordBatch]:
        for chunk in con.sql(rows).to_arrow_reader(TEXTS_PER_ROUND):
            encoding = encoder.encode(chunk.column("text").to_pylist())
            progress.advance(chunk.num_rows)
            yield pa.RecordBatch.from_arrays(
                [chunk.column("qid"), chunk.column("lang"), to_vector_array(encoding.vectors)], schema=schema)
        progress.finish()

    return TableStream(schema, batches())


def class_labels(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Each triple class of the ``version`` view's entities with its English label ("" when it
    has none): the classes come from the version (what training looks up), the labels from the
    ``entities`` view, where each entity lists its classes with their labels side by side (the
    first entity in QID order that names a class gives its label)."""
    require_columns(con, "entities", ["qid", "classes", "class_labels"], "entities")
    require_columns(con, "version", ["qid", "classes"], "dataset version")
    uneven = sql.row(con, f"""
        SELECT qid, classes, class_labels FROM entities {IN_VERSION}
        WHERE len(coalesce(classes, [])) <> len(coalesce(class_labels, [])) ORDER BY qid LIMIT 1""")
    if uneven is not None:
        raise FeatureInputError(f"entities: {uneven[0]}: classes {uneven[1]} and class_labels {uneven[2]} differ in length")
    return sql.table(con, f"""
        SELECT c.qid, coalesce(l.label, '') AS label
        FROM (SELECT DISTINCT unnest(classes) AS qid FROM version) c
        LEFT JOIN (
            SELECT class AS qid, arg_min(coalesce(label, ''), entity) AS label FROM (
                SELECT qid AS entity, unnest(classes) AS class, unnest(class_labels) AS label
                FROM entities {IN_VERSION}
            ) GROUP BY class
        ) l USING (qid)
        ORDER BY c.qid""", pa.schema([("qid", pa.string()), ("label", pa.string())]))


def class_feature_table(con: duckdb.DuckDBPyConnection, encoder: TextEncoder, log: Log | None = None) -> pa.Table:
    """Label vectors for the version's triple classes; a class without a label is encoded by its QID."""
    labels = class_labels(con)
    qids = labels.column("qid").to_pylist()
    texts = [label or qid for qid, label in zip(qids, labels.column("label").to_pylist())]
    encoding = encoder.encode(texts, log, what="class features")
    table = pa.Table.from_arrays(
        [labels.column("qid"), labels.column("label"), to_vector_array(encoding.vectors)],
        schema=schemas.class_features_schema(encoder.dim),
    )
    return schemas.sort_table(table, "class_features")
