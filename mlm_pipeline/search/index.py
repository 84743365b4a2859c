"""The search index: every image and every summary of a release in the model's shared space.

Rows are what a search returns: one per image (entity, file name) and one per summary (entity,
language), with what a page needs to show them (the entity's label and coordinates, the
summary's text) and the sha256 of the bytes or text, by which a query that *is* an item of the
dataset is recognised. Vectors are the trained network's unit-length embeddings, so a result's
score is the cosine similarity the paper's retrieval evaluation ranks by.

A summary is embedded together with its entity's class vector, the input the text branch was
trained with. A text the release does not hold has no entity and so no classes: it takes the
release's mean class vector (``ClassVectors.prior``), as does an entity none of whose classes
has a vector. Embeddings are computed in fixed batches in a fixed order, so the same inputs give
the same bytes, and a batch at a time, so the feature matrices are never copied whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from mlm_pipeline import schemas
from mlm_pipeline.encoders.vectors import to_vector_array, vector_matrix
from mlm_pipeline.model.networks import MLMNet

IMAGE = "image"
TEXT = "text"
LABEL_COLUMNS = ("label_en", "label_de", "label_fr")


class IndexInputError(ValueError):
    """Input tables that do not fit together (a feature row without its image, entity or text)."""


def _require(table: pa.Table, columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise IndexInputError(f"{name} lacks columns {missing} (has {table.column_names})")


def text_sha256(text: str) -> str:
    """How a summary, and a text query, is recognised: surrounding whitespace does not count."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()


class ClassVectors:
    """Each entity's mean class vector (the text branch's second input) and the release's mean.

    Only the rows of each entity's classes are kept, not a vector per entity, so this stays small
    at MLM's 240k entities.
    """

    def __init__(self, class_features: pa.Table, version: pa.Table) -> None:
        _require(class_features, ["qid", "vector"], "class_features")
        _require(version, ["qid", "classes"], "dataset version")
        if class_features.num_rows == 0:
            raise IndexInputError("class_features is empty: the text branch has no class input")
        self.matrix = vector_matrix(class_features.column("vector"))
        row_of = {qid: i for i, qid in enumerate(class_features.column("qid").to_pylist())}
        self.rows: dict[str, list[int]] = {}
        for qid, classes in zip(version.column("qid").to_pylist(), version.column("classes").to_pylist()):
            rows = [row_of[c] for c in classes or [] if c in row_of]
            if rows:
                self.rows[qid] = rows
        if self.rows:
            means = np.stack([self.matrix[rows].mean(axis=0) for rows in self.rows.values()])
            self.prior = means.mean(axis=0).astype(np.float32)
        else:
            self.prior = self.matrix.mean(axis=0).astype(np.float32)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def of(self, qid: str | None) -> np.ndarray:
        rows = self.rows.get(qid) if qid is not None else None
        return self.matrix[rows].mean(axis=0).astype(np.float32) if rows else self.prior

    def batch(self, qids: list[str]) -> np.ndarray:
        return np.stack([self.of(qid) for qid in qids]) if qids else np.zeros((0, self.dim), np.float32)


def embed_images(net: MLMNet, features: np.ndarray) -> np.ndarray:
    """Image descriptors (n, image_dim) to unit-length embeddings (n, emb_dim)."""
    device = next(net.parameters()).device
    with torch.inference_mode():
        return net.embed_image(torch.tensor(features, device=device)).float().cpu().numpy()


def embed_texts(net: MLMNet, summaries: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Summary vectors and class vectors (n, text_dim), (n, class_dim) to unit-length embeddings."""
    device = next(net.parameters()).device
    with torch.inference_mode():
        summary = torch.tensor(summaries, device=device)
        return net.embed_text(summary, torch.tensor(classes, device=device)).float().cpu().numpy()


def entity_columns(entities: pa.Table, version: pa.Table) -> pa.Table:
    """qid, label (English, else German, else French, else the QID), lat, lon of the version."""
    _require(entities, ["qid", *LABEL_COLUMNS], "entities")
    _require(version, ["qid", "lat", "lon"], "dataset version")
    names = entities.select(["qid", *LABEL_COLUMNS])
    joined = version.select(["qid", "lat", "lon"]).join(names, "qid", join_type="left outer")
    label = joined.column("qid")
    for column in reversed(LABEL_COLUMNS):  # the first non-empty one wins
        value = joined.column(column)
        label = pc.if_else(pc.fill_null(pc.not_equal(value, ""), False), value, label)
    return pa.table({"qid": joined.column("qid"), "label": label, "lat": joined.column("lat"), "lon": joined.column("lon")})


def _aligned(keys: pa.Table, other: pa.Table, on: list[str], what: str) -> pa.Table:
    """``other``'s columns for each row of ``keys``, in ``keys``' order; every row must match."""
    numbered = keys.select(on).append_column("_row", pa.array(np.arange(keys.num_rows), pa.int64()))
    marked = other.append_column("_found", pa.array(np.ones(other.num_rows, bool)))
    joined = numbered.join(marked, on, join_type="left outer").sort_by("_row")
    if joined.num_rows != keys.num_rows:
        raise IndexInputError(f"{what}: {joined.num_rows - keys.num_rows} rows match more than once")
    unmatched = pc.is_null(joined.column("_found"))
    if pc.any(unmatched).as_py():
        first = joined.filter(unmatched).slice(0, 3).select(on).to_pylist()
        raise IndexInputError(f"{what}: {pc.sum(unmatched).as_py()} rows have no match, e.g. {first}")
    return joined


def _batches(table: pa.Table, batch_size: int) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, batch_size):
        yield table.slice(start, batch_size)


def image_rows(
    image_features: pa.Table, images: pa.Table, places: pa.Table, net: MLMNet, batch_size: int
) -> pa.Table:
    """One index row per image feature vector."""
    _require(image_features, ["qid", "file_name", "vector"], "image_features")
    _require(images, ["qid", "file_name", "sha256"], "images_filtered")
    features = image_features.sort_by([("qid", "ascending"), ("file_name", "ascending")])
    sha = _aligned(features, images.select(["qid", "file_name", "sha256"]), ["qid", "file_name"], "image_features vs images_filtered")
    where = _aligned(features, places, ["qid"], "image_features vs the dataset version")
    embedded = [embed_images(net, vector_matrix(batch.column("vector"))) for batch in _batches(features, batch_size)]
    no_text = pa.nulls(features.num_rows, pa.string())
    return _rows(IMAGE, features, "file_name", where, sha.column("sha256"), no_text, embedded, net.shape.emb_dim)


def text_rows(
    text_features: pa.Table,
    summaries: pa.Table,
    places: pa.Table,
    classes: ClassVectors,
    net: MLMNet,
    batch_size: int,
) -> pa.Table:
    """One index row per summary feature vector, embedded with its entity's classes."""
    _require(text_features, ["qid", "lang", "vector"], "text_features")
    _require(summaries, ["qid", "lang", "text"], "summaries")
    features = text_features.sort_by([("qid", "ascending"), ("lang", "ascending")])
    texts = _aligned(features, summaries.select(["qid", "lang", "text"]), ["qid", "lang"], "text_features vs summaries")
    where = _aligned(features, places, ["qid"], "text_features vs the dataset version")
    embedded = []
    for batch in _batches(features, batch_size):
        class_input = classes.batch(batch.column("qid").to_pylist())
        embedded.append(embed_texts(net, vector_matrix(batch.column("vector")), class_input))
    text = texts.column("text")
    sha = pa.array([text_sha256(t or "") for t in text.to_pylist()], pa.string())
    return _rows(TEXT, features, "lang", where, sha, text, embedded, net.shape.emb_dim)


def _rows(
    kind: str,
    features: pa.Table,
    item: str,
    where: pa.Table,
    sha: pa.ChunkedArray | pa.Array,
    text: pa.ChunkedArray | pa.Array,
    embedded: list[np.ndarray],
    dim: int,
) -> pa.Table:
    n = features.num_rows
    vectors = np.concatenate(embedded) if embedded else np.zeros((0, dim), np.float32)
    return pa.Table.from_arrays(
        [
            pa.array([kind] * n, pa.string()),
            features.column("qid"),
            features.column(item),
            where.column("label"),
            where.column("lat"),
            where.column("lon"),
            sha,
            text,
            to_vector_array(vectors),
        ],
        schema=schemas.search_index_schema(dim),
    )


def build_search_index(
    *,
    image_features: pa.Table,
    text_features: pa.Table,
    images: pa.Table,
    summaries: pa.Table,
    entities: pa.Table,
    version: pa.Table,
    class_features: pa.Table,
    net: MLMNet,
    batch_size: int = 4096,
) -> pa.Table:
    """Every image and summary that has features, embedded by ``net`` (schemas.search_index_schema)."""
    net.eval()
    places = entity_columns(entities, version)
    classes = ClassVectors(class_features, version)
    parts = [
        image_rows(image_features, images, places, net, batch_size),
        text_rows(text_features, summaries, places, classes, net, batch_size),
    ]
    return schemas.sort_table(pa.concat_tables(parts), "search_index")
