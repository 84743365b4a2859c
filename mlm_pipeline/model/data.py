"""From the feature tables to in-memory tensors, one item per entity.

Choices, and why:
- One item per *entity*, not per image: the paper's splits and sample counts are entities
  (174,944 training samples for MLM-irle) and its test instances are entities too.
- Images: an entity's images all stay in memory. Training draws one of them per entity and
  epoch (seeded), so every image is used over the epochs; validation and test use the entity's
  first image by file name, so that their numbers do not move from one evaluation to the next.
- Summary vector: the mean over the entity's languages (en/de/fr). Deterministic, and each
  entity's text side sees all the languages it has.
- Class vector: the mean over the entity's triple classes that have a feature vector.
- Every tensor is built once; nothing is read from files per sample.

An entity of the version that lacks image, summary or class features cannot be a sample; it
drops out with a reason (schemas.DROPOUTS) instead of failing the run. A split table that does
not match the version is an upstream error and fails with both names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from mlm_pipeline import schemas

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitData:
    """One split's entities (sorted by QID) with their features as tensors."""

    qids: tuple[str, ...]
    images: torch.Tensor  # [n_images, image_dim] float32, every image of these entities
    image_start: torch.Tensor  # [n] long, first row of entity i in ``images``
    image_count: torch.Tensor  # [n] long, at least 1
    summary: torch.Tensor  # [n, text_dim] float32
    classes: torch.Tensor  # [n, class_dim] float32
    cell: torch.Tensor  # [n] long
    lat: np.ndarray  # [n] float64, the entity's coordinates, for distance errors
    lon: np.ndarray

    def __len__(self) -> int:
        return len(self.qids)

    def first_images(self) -> torch.Tensor:
        return self.images[self.image_start]

    def image_rows(self, generator: torch.Generator) -> torch.Tensor:
        """One random image row per entity, drawn on the CPU (where the generator lives)."""
        count, start = self.image_count.cpu(), self.image_start.cpu()
        draw = torch.rand(len(self), generator=generator, dtype=torch.float64)
        return start + torch.minimum((draw * count).long(), count - 1)

    def to(self, device: torch.device) -> SplitData:
        return SplitData(
            self.qids,
            self.images.to(device),
            self.image_start.to(device),
            self.image_count.to(device),
            self.summary.to(device),
            self.classes.to(device),
            self.cell.to(device),
            self.lat,
            self.lon,
        )


@dataclass(frozen=True)
class VersionData:
    version: str
    splits: dict[str, SplitData]
    n_cells: int
    image_dim: int
    text_dim: int
    class_dim: int
    dropouts: pa.Table  # schemas.DROPOUTS


def vectors(table: pa.Table, column: str, name: str) -> np.ndarray:
    """A list column of equal-length float lists as an [n, d] float32 array."""
    values = table.column(column).combine_chunks()
    if len(values) == 0:
        raise ValueError(f"{name} is empty: there are no vectors to train on")
    if values.null_count:
        raise ValueError(f"{name}.{column} has {values.null_count} null vectors")
    lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
    if lengths.min() != lengths.max():
        raise ValueError(f"{name}.{column} mixes vector lengths {int(lengths.min())} and {int(lengths.max())}")
    flat = pc.list_flatten(values).to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat.reshape(len(values), int(lengths[0])), dtype=np.float32)


def group_rows(keys: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(start, count) of each run of equal keys in an already sorted key column."""
    keys_array = np.asarray(keys, dtype=object)
    if len(keys_array) == 0:
        return {}
    starts = np.flatnonzero(np.r_[True, keys_array[1:] != keys_array[:-1]])
    counts = np.diff(np.r_[starts, len(keys_array)])
    return {str(keys_array[s]): (int(s), int(c)) for s, c in zip(starts, counts)}


def _require(table: pa.Table, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}; it has {table.column_names}")


def load_version(
    version: str,
    version_table: pa.Table,
    splits: pa.Table,
    image_features: pa.Table,
    text_features: pa.Table,
    class_features: pa.Table,
    stage: str,
    n_cells: int | None = None,
) -> VersionData:
    """Join one dataset version with its split and features; see the module docstring.

    ``n_cells`` is the size of the version's cell table (labels 0..n-1); None takes the largest
    label in use plus one.
    """
    _require(version_table, ["qid", "lat", "lon", "cell", "classes"], version)
    _require(splits, ["version", "qid", "split"], "splits")
    _require(image_features, ["qid", "file_name", "vector"], "image_features")
    _require(text_features, ["qid", "lang", "vector"], "text_features")
    _require(class_features, ["qid", "vector"], "class_features")

    version_table = version_table.sort_by("qid")
    qids = version_table.column("qid").to_pylist()
    cells_column = version_table.column("cell")
    if cells_column.null_count:
        raise ValueError(f"{version} has {cells_column.null_count} entities without a geo-cell")
    if len(qids) == 0:
        raise ValueError(f"{version} has no entities")
    cells = cells_column.to_numpy().astype(np.int64)
    if n_cells is None:
        n_cells = int(cells.max()) + 1
    elif cells.min() < 0 or cells.max() >= n_cells:
        raise ValueError(
            f"{version} uses geo-cell labels {int(cells.min())}..{int(cells.max())}, "
            f"but its cell table has {n_cells} cells (0..{n_cells - 1})"
        )

    split_rows = splits.filter(pc.equal(splits.column("version"), version))
    if split_rows.num_rows == 0:
        found = sorted(set(splits.column("version").to_pylist()))
        raise ValueError(f"splits has no rows for version {version!r}; it has {found}")
    split_of = dict(zip(split_rows.column("qid").to_pylist(), split_rows.column("split").to_pylist()))
    unknown = sorted(set(split_of.values()) - set(SPLITS))
    if unknown:
        raise ValueError(f"splits for {version} use unknown split names {unknown}")
    missing = [q for q in qids if q not in split_of]
    if missing or len(split_of) != len(qids):
        extra = len(set(split_of) - set(qids))
        raise ValueError(
            f"splits for {version} do not match the version table: {len(missing)} entities "
            f"without a split (e.g. {missing[:3]}), {extra} split rows for unknown entities"
        )

    image_features = image_features.sort_by([("qid", "ascending"), ("file_name", "ascending")])
    image_matrix = vectors(image_features, "vector", "image_features")
    image_groups = group_rows(image_features.column("qid").to_pylist())

    text_features = text_features.sort_by([("qid", "ascending"), ("lang", "ascending")])
    text_matrix = vectors(text_features, "vector", "text_features")
    text_groups = group_rows(text_features.column("qid").to_pylist())

    class_matrix = vectors(class_features, "vector", "class_features")
    class_row = {q: i for i, q in enumerate(class_features.column("qid").to_pylist())}
    entity_classes = version_table.column("classes").to_pylist()

    dropouts: list[dict[str, str]] = []
    kept: list[int] = []
    class_rows: dict[int, list[int]] = {}
    for i, qid in enumerate(qids):
        rows = [class_row[c] for c in entity_classes[i] or [] if c in class_row]
        reason = ""
        if qid not in image_groups:
            reason, detail = "no_image_features", "no image of the entity has a feature vector"
        elif qid not in text_groups:
            reason, detail = "no_text_features", "no summary of the entity has a feature vector"
        elif not rows:
            reason, detail = "no_class_features", f"none of its classes {entity_classes[i]} has a feature vector"
        if reason:
            dropouts.append({"qid": qid, "item": "", "stage": stage, "reason": reason, "detail": detail})
            continue
        kept.append(i)
        class_rows[i] = rows

    data: dict[str, SplitData] = {}
    for split in SPLITS:
        members = [i for i in kept if split_of[qids[i]] == split]
        data[split] = _split_data(
            [qids[i] for i in members],
            cells[members],
            version_table.column("lat").to_numpy()[members],
            version_table.column("lon").to_numpy()[members],
            image_matrix,
            image_groups,
            text_matrix,
            text_groups,
            class_matrix,
            [class_rows[i] for i in members],
        )
    dropout_table = schemas.sort_table(
        pa.Table.from_pylist(dropouts, schema=schemas.DROPOUTS), "entity_dropouts"
    )
    return VersionData(
        version=version,
        splits=data,
        n_cells=n_cells,
        image_dim=image_matrix.shape[1],
        text_dim=text_matrix.shape[1],
        class_dim=class_matrix.shape[1],
        dropouts=dropout_table,
    )


def _split_data(
    qids: list[str],
    cells: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    image_matrix: np.ndarray,
    image_groups: dict[str, tuple[int, int]],
    text_matrix: np.ndarray,
    text_groups: dict[str, tuple[int, int]],
    class_matrix: np.ndarray,
    class_rows: list[list[int]],
) -> SplitData:
    image_index: list[int] = []
    starts: list[int] = []
    counts: list[int] = []
    summary = np.zeros((len(qids), text_matrix.shape[1]), dtype=np.float32)
    classes = np.zeros((len(qids), class_matrix.shape[1]), dtype=np.float32)
    for i, qid in enumerate(qids):
        start, count = image_groups[qid]
        starts.append(len(image_index))
        counts.append(count)
        image_index.extend(range(start, start + count))
        t_start, t_count = text_groups[qid]
        summary[i] = text_matrix[t_start : t_start + t_count].mean(axis=0)
        classes[i] = class_matrix[class_rows[i]].mean(axis=0)
    return SplitData(
        qids=tuple(qids),
        images=torch.from_numpy(image_matrix[image_index].reshape(len(image_index), image_matrix.shape[1])),
        image_start=torch.tensor(starts, dtype=torch.long),
        image_count=torch.tensor(counts, dtype=torch.long),
        summary=torch.from_numpy(summary),
        classes=torch.from_numpy(classes),
        cell=torch.from_numpy(np.asarray(cells, dtype=np.int64)),
        lat=np.asarray(lat, dtype=np.float64),
        lon=np.asarray(lon, dtype=np.float64),
    )
