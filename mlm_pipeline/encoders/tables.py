"""From the pipeline's tables to feature tables: which rows are encoded, in which order, in
bounded rounds.

Only entities of MLM-irle are encoded: training and evaluation use MLM-irle and MLM-irle-gr,
and MLM-irle-gr is a sample of MLM-irle, so features for the rest of MLM would be computed and
never read (on the paper's data that is a quarter of the images). The input tables are stored
sorted by the output's key, so their rows are read in stored order, a batch at a time, those of
the version's entities kept, and encoded in rounds of a fixed number of rows (a round's bytes,
pixels and vectors are all a process holds, and nothing is sorted, whatever the release's
size); the same rows give the same rounds, and so the same bytes.

The loop is the same for any encoder: a round of inputs (image bytes read by their sha256, or
texts) goes through ``encode_images`` or ``TextEncoder.encode``, its vectors go out as a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import duckdb
import pyarrow as pa
import torch

from mlm_pipeline import schemas, sql
from mlm_pipeline.encoders.image import ImageEncoder, encode_images
from mlm_pipeline.encoders.progress import Progress
from mlm_pipeline.encoders.text import TextEncoder
from mlm_pipeline.encoders.vectors import to_vector_array
from mlm_pipeline.shards import StoredTable, TableStream

Log = Callable[[str], None]
IMAGES_PER_ROUND = 1024
TEXTS_PER_ROUND = 2048
IN_VERSION = "SEMI JOIN (SELECT qid FROM version) USING (qid)"


class FeatureInputError(ValueError):
    """An input table that lacks what the features need."""


def require_columns(present: Sequence[str], columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in present]
    if missing:
        raise FeatureInputError(f"{name} lacks columns {missing} (has {list(present)})")


@dataclass(frozen=True)
class VersionRows:
    """The rows of a stored table whose entity is in a dataset version, in stored order."""

    table: StoredTable
    members: frozenset[str]  # the version's entities
    key: tuple[str, ...]  # the order the table is stored in (and the features are written in)
    name: str

    @classmethod
    def of(cls, table: StoredTable, version: StoredTable, key: tuple[str, ...], name: str) -> "VersionRows":
        require_columns(table.schema.names, list(key), name)
        require_columns(version.schema.names, ["qid"], "dataset version")
        return cls(table, frozenset(version.read(["qid"]).column("qid").to_pylist()), key, name)

    def _kept(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch.filter(pa.array([q in self.members for q in batch.column("qid").to_pylist()], pa.bool_()))

    def count(self) -> int:
        return sum(self._kept(batch).num_rows for batch in self.table.batches(["qid"], batch_size=65536))

    def rounds(self, columns: list[str], size: int) -> Iterator[pa.Table]:
        """``size`` rows at a time (the last round fewer); an input out of order is refused, since
        the output would be too."""
        require_columns(self.table.schema.names, columns, self.name)
        buffered: list[pa.RecordBatch] = []
        rows = 0
        last: tuple | None = None
        for batch in self.table.batches(columns, batch_size=size):
            kept = self._kept(batch)
            keys = list(zip(*(kept.column(c).to_pylist() for c in self.key)))
            if any(later < earlier for earlier, later in zip([last, *keys], keys) if earlier is not None):
                raise FeatureInputError(
                    f"{self.name} is not stored in {'+'.join(self.key)} order; rematerialise it for this release")
            last = keys[-1] if keys else last
            buffered.append(kept)
            rows += kept.num_rows
            while rows >= size:
                whole = pa.Table.from_batches(buffered)
                yield whole.slice(0, size)
                buffered, rows = whole.slice(size).to_batches(), whole.num_rows - size
        if rows:
            yield pa.Table.from_batches(buffered)


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
    images: StoredTable,
    version: StoredTable,
    read: Callable[[str], bytes],
    encoder: ImageEncoder,
    *,
    device: torch.device,
    batch_size: int,
    workers: int,
    log: Log | None = None,
) -> tuple[TableStream, ImageFeatureStats]:
    """IMAGE_FEATURES of the ``images`` rows (images_filtered) whose entity is in ``version``,
    a round at a time; images that will not decode are collected in the stats as dropouts."""
    if encoder.dim != schemas.IMAGE_FEATURE_DIM:
        raise FeatureInputError(f"image encoder gives {encoder.dim} dims, the table holds {schemas.IMAGE_FEATURE_DIM}")
    rows = VersionRows.of(images, version, ("qid", "file_name"), "images_filtered")
    progress = Progress("image features", rows.count(), log)
    stats = ImageFeatureStats()

    def batches() -> Iterator[pa.RecordBatch]:
        for chunk in rows.rounds(["qid", "file_name", "sha256"], IMAGES_PER_ROUND):
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
                [qids.take(kept).combine_chunks(), names.take(kept).combine_chunks(), to_vector_array(encoding.vectors)],
                schema=schemas.IMAGE_FEATURES)
        progress.finish()

    return TableStream(schemas.IMAGE_FEATURES, batches()), stats


def text_feature_stream(
    summaries: StoredTable, version: StoredTable, encoder: TextEncoder, log: Log | None = None
) -> TableStream:
    """One vector per (entity, language) summary of an entity in ``version``, a round of texts
    at a time."""
    rows = VersionRows.of(summaries, version, ("qid", "lang"), "summaries")
    progress = Progress("text features: summaries", rows.count(), log)
    schema = schemas.text_features_schema(encoder.dim)

    def batches() -> Iterator[pa.RecordBatch]:
        for chunk in rows.rounds(["qid", "lang", "text"], TEXTS_PER_ROUND):
            encoding = encoder.encode([text or "" for text in chunk.column("text").to_pylist()])
            progress.advance(chunk.num_rows)
            yield pa.RecordBatch.from_arrays(
                [chunk.column("qid").combine_chunks(), chunk.column("lang").combine_chunks(),
                 to_vector_array(encoding.vectors)], schema=schema)
        progress.finish()

    return TableStream(schema, batches())


def class_labels(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Each triple class of the ``version`` view's entities with its English label ("" when it
    has none): the classes come from the version (what training looks up), the labels from the
    ``entities`` view, where each entity lists its classes with their labels side by side (the
    first entity in QID order that names a class gives its label)."""
    for view, columns, name in (("entities", ["qid", "classes", "class_labels"], "entities"),
                                ("version", ["qid", "classes"], "dataset version")):
        require_columns([row[0] for row in con.execute(f"DESCRIBE {view}").fetchall()], columns, name)
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
