"""From the pipeline's tables to feature tables: which rows are encoded, and in which order.

Only entities of MLM-irle are encoded: training and evaluation use MLM-irle and MLM-irle-gr,
and MLM-irle-gr is a sample of MLM-irle, so features for the rest of MLM would be computed and
never read (on the paper's data that is a quarter of the images). Rows are sorted by the output
key before encoding, so batches, and so the bytes of the result, do not depend on input order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from mlm_pipeline import schemas
from mlm_pipeline.encoders.image import ImageEncoder, encode_images
from mlm_pipeline.encoders.progress import Progress
from mlm_pipeline.encoders.text import TextEncoder
from mlm_pipeline.encoders.vectors import to_vector_array

Log = Callable[[str], None]


class BinaryColumn(Sequence[bytes]):
    """Rows of an Arrow binary column, in a given order, read one at a time.

    Neither sorting nor combining chunks copies the image bytes (a combined binary array is
    also limited to 2 GiB, which the paper's 300k images pass).
    """

    def __init__(self, column: pa.ChunkedArray, rows: np.ndarray | None = None) -> None:
        self.chunks = [chunk for chunk in column.chunks if len(chunk)]
        self.starts = np.cumsum([0] + [len(chunk) for chunk in self.chunks])
        self.rows = np.arange(len(column), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):  # type: ignore[override]  # int only: the decoder's access
        row = int(self.rows[index])
        chunk = int(np.searchsorted(self.starts, row, side="right")) - 1
        return self.chunks[chunk][row - int(self.starts[chunk])].as_py()


class FeatureInputError(ValueError):
    """An input table that lacks what the features need."""


def require_columns(table: pa.Table, columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise FeatureInputError(f"{name} lacks columns {missing} (has {table.column_names})")


def rows_of_version(table: pa.Table, version: pa.Table, name: str, sort_as: str) -> pa.Table:
    """The rows whose ``qid`` is in the dataset version, sorted by ``sort_as``'s key."""
    require_columns(table, ["qid"], name)
    require_columns(version, ["qid"], "dataset version")
    keep = pc.is_in(table.column("qid"), value_set=version.column("qid").combine_chunks())
    return schemas.sort_table(table.filter(keep), sort_as)


@dataclass
class ImageFeatureResult:
    table: pa.Table  # schemas.IMAGE_FEATURES
    dropouts: pa.Table  # schemas.DROPOUTS, images that would not decode
    seconds: float


def image_feature_table(
    images: pa.Table,
    version: pa.Table,
    encoder: ImageEncoder,
    *,
    device: torch.device,
    batch_size: int,
    workers: int,
    log: Log | None = None,
) -> ImageFeatureResult:
    require_columns(images, ["qid", "file_name", "content"], "images_filtered")
    if encoder.dim != schemas.IMAGE_FEATURE_DIM:
        raise FeatureInputError(f"image encoder gives {encoder.dim} dims, the table holds {schemas.IMAGE_FEATURE_DIM}")
    keys = images.select(["qid", "file_name"]).append_column("row", pa.array(np.arange(images.num_rows), pa.int64()))
    rows = rows_of_version(keys, version, "images_filtered", "image_features")
    progress = Progress("image features", rows.num_rows, log)
    contents = BinaryColumn(images.column("content"), rows.column("row").to_numpy())
    encoding = encode_images(
        encoder, contents, device=device, batch_size=batch_size, workers=workers, progress=progress
    )
    progress.finish()
    kept = rows.take(pa.array(encoding.indices, pa.int64()))
    table = pa.Table.from_arrays(
        [kept.column("qid"), kept.column("file_name"), to_vector_array(encoding.vectors)],
        schema=schemas.IMAGE_FEATURES,
    )
    qids = rows.column("qid").to_pylist()
    names = rows.column("file_name").to_pylist()
    failed = [(qids[i], names[i], "image_features", "undecodable", reason) for i, reason in encoding.failures]
    dropouts = pa.Table.from_pylist(
        [dict(zip(schemas.DROPOUTS.names, row)) for row in failed], schema=schemas.DROPOUTS
    )
    return ImageFeatureResult(
        schemas.sort_table(table, "image_features"),
        schemas.sort_table(dropouts, "image_feature_dropouts"),
        encoding.seconds,
    )


def text_feature_table(summaries: pa.Table, version: pa.Table, encoder: TextEncoder, log: Log | None = None) -> pa.Table:
    """One vector per (entity, language) summary of the version."""
    require_columns(summaries, ["qid", "lang", "text"], "summaries")
    rows = rows_of_version(summaries.select(["qid", "lang", "text"]), version, "summaries", "text_features")
    texts = [text or "" for text in rows.column("text").to_pylist()]
    encoding = encoder.encode(texts, log, what="text features")
    return pa.Table.from_arrays(
        [rows.column("qid"), rows.column("lang"), to_vector_array(encoding.vectors)],
        schema=schemas.text_features_schema(encoder.dim),
    )


def class_labels(entities: pa.Table, version: pa.Table) -> pa.Table:
    """Each triple class of the version's entities with its English label ("" when it has none).

    The classes come from the version (what training looks up); labels from the entities table,
    where each entity lists its classes with their labels side by side.
    """
    require_columns(entities, ["classes", "class_labels"], "entities")
    require_columns(version, ["classes"], "dataset version")
    labels: dict[str, str] = {}
    rows = rows_of_version(entities.select(["qid", "classes", "class_labels"]), version, "entities", "entities")
    for classes, names in zip(rows.column("classes").to_pylist(), rows.column("class_labels").to_pylist()):
        if len(classes or []) != len(names or []):
            raise FeatureInputError(f"entities: classes {classes} and class_labels {names} differ in length")
        for qid, name in zip(classes or [], names or []):
            labels.setdefault(qid, name or "")
    wanted = sorted({q for classes in version.column("classes").to_pylist() for q in classes or []})
    return pa.table({"qid": wanted, "label": [labels.get(q, "") for q in wanted]})


def class_feature_table(
    entities: pa.Table, version: pa.Table, encoder: TextEncoder, log: Log | None = None
) -> pa.Table:
    """Label vectors for the version's triple classes; a class without a label is encoded by its QID."""
    labels = class_labels(entities, version)
    qids = labels.column("qid").to_pylist()
    texts = [label or qid for qid, label in zip(qids, labels.column("label").to_pylist())]
    encoding = encoder.encode(texts, log, what="class features")
    table = pa.Table.from_arrays(
        [labels.column("qid"), labels.column("label"), to_vector_array(encoding.vectors)],
        schema=schemas.class_features_schema(encoder.dim),
    )
    return schemas.sort_table(table, "class_features")
