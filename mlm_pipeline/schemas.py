"""The tables that pass between stages: one schema per asset, the contract between stages.

Every asset returns a ``pyarrow.Table`` with exactly its schema here, rows sorted by the
columns named in ``SORT_KEYS`` so that the same inputs give the same Parquet bytes. Dropout and
failure tables share one shape so that "where did entity X go?" has one answer.
"""

from __future__ import annotations

import pyarrow as pa

STR = pa.string()
STRS = pa.list_(pa.string())

# Stage 1: the subclass closure of the base class.
SETTLEMENT_CLASSES = pa.schema(
    [
        ("qid", STR),  # e.g. Q747074
        ("label_en", STR),  # null when the class has no English label
        ("hops", pa.int8()),  # shortest wdt:P279 path to the base class; the base itself is 0
        ("parent_qid", STR),  # the parent on one shortest path (smallest QID among ties); null for the base
    ]
)

# Stage 2: entities that pass every constraint.
ENTITIES = pa.schema(
    [
        ("qid", STR),
        ("label_en", STR),
        ("label_de", STR),
        ("label_fr", STR),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
        ("classes", STRS),  # every wdt:P31 class (the triple classes), sorted by QID
        ("class_labels", STRS),  # English label per class, "" when it has none
        ("images", STRS),  # Commons file names from the configured image properties, in property then value order, de-duplicated
        ("title_en", STR),  # sitelink titles, null when no article in that language
        ("title_de", STR),
        ("title_fr", STR),
        ("country_qid", STR),  # wdt:P17, null when absent
        ("country_code", STR),  # ISO 3166-1 alpha-2 of that country (wdt:P297), null when absent
    ]
)

# One shape for everything that drops out of any stage, with its reason.
DROPOUTS = pa.schema(
    [
        ("qid", STR),
        ("item", STR),  # what dropped: "" for the entity itself, else a language or file name
        ("stage", STR),  # asset name that dropped it
        ("reason", STR),  # short machine-readable reason, e.g. no_coordinates, svg, http_404
        ("detail", STR),  # human-readable detail (status code, attempts, error text)
    ]
)

# Stage 3a: Wikipedia intro summaries.
SUMMARIES = pa.schema(
    [
        ("qid", STR),
        ("lang", STR),
        ("title", STR),  # the sitelink title asked for
        ("text", STR),  # plain-text intro
        ("revision", pa.int64()),  # the page's revision when fetched (prop=info lastrevid); null when not given
    ]
)

# Stage 3b/4: images (thumbnails). The bytes are stored once per release, apart from the tables:
# ``mlm_pipeline.blobs.image_bytes(release, sha256)`` reads them.
IMAGES = pa.schema(
    [
        ("qid", STR),
        ("file_name", STR),  # Commons file name without the "File:" prefix
        ("url", STR),  # the URL the bytes came from
        ("sha256", STR),  # of the bytes; names them in the release's blob store
        ("format", STR),  # as detected from the content: JPEG, PNG, SVG, ...
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("n_bytes", pa.int64()),
        ("license", STR),  # Commons' LicenseShortName, e.g. "CC BY-SA 4.0"; null when the page has none
        ("attribution", STR),  # Attribution, else Artist, else Credit, as plain text
        # The file's rights and identity as its Commons description page gives them (extmetadata,
        # plain text); null where the page says nothing. release_package builds its
        # attribution table from these.
        ("description_url", STR),  # the file's page on Commons
        ("license_url", STR),
        ("artist", STR),
        ("credit", STR),
        ("attribution_required", pa.bool_()),
        ("commons_sha1", STR),  # sha1 of the original file, as imageinfo reports it
    ]
)

# Stage 5: geo-cells and each entity's cell.
GEO_CELLS = pa.schema(
    [
        ("cell", pa.int32()),  # class label 0..n-1, in S2 token order
        ("token", STR),
        ("level", pa.int8()),
        ("count", pa.int32()),
        ("mean_lat", pa.float64()),
        ("mean_lon", pa.float64()),
    ]
)
ENTITY_CELLS = pa.schema([("qid", STR), ("cell", pa.int32()), ("token", STR)])

# Stage 6: a dataset version lists its entities with what it keeps of each.
VERSION = pa.schema(
    [
        ("qid", STR),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
        ("country_code", STR),  # from the coordinates (reverse geocoding), not from P17
        ("continent", STR),
        ("cell", pa.int32()),  # null in MLM (no cells), set in MLM-irle and MLM-irle-gr
        ("classes", STRS),
        ("n_images", pa.int32()),
        ("n_summaries", pa.int32()),
        ("languages", STRS),
    ]
)
SPLITS = pa.schema([("version", STR), ("qid", STR), ("split", STR)])  # train / val / test

# The paper's Table 2 (and Figure 2's counts): one row per measure, one column per version.
DATASET_STATS = pa.schema(
    [
        ("row", pa.int16()),  # the measure's place in the table (entities, images, summaries, ...)
        ("measure", STR),  # entities, images, summaries, triple_classes, cells, train/val/test, entities_<continent>
        ("mlm", pa.int64()),
        ("mlm_irle", pa.int64()),
        ("mlm_irle_gr", pa.int64()),
    ]
)

# What changed between a release and the one before it (ops: release_diff).
RELEASE_DIFF = pa.schema(
    [
        ("qid", STR),
        ("change", STR),  # added / removed / changed
        ("fields", STRS),  # for "changed": which of coordinates, classes, images, summaries; sorted
        ("previous_release", STR),  # the release compared against; null for the first release
    ]
)

# Stage 8: a trained model's learning curve, one row per epoch. Loss columns of a task the
# model does not train are null; weights are exp(-log variance), 1.0 for a lone task.
LEARNING_CURVE = pa.schema(
    [
        ("model", STR),  # asset name, e.g. model_multitask_mlm_irle
        ("version", STR),  # mlm_irle / mlm_irle_gr
        ("task", STR),  # multitask / ir / le
        ("epoch", pa.int32()),
        ("train_loss", pa.float64()),  # unweighted sum of the task losses
        ("train_objective", pa.float64()),  # the weighted loss that was optimised
        ("val_loss", pa.float64()),  # unweighted sum; the best checkpoint is chosen by it
        ("train_retrieval", pa.float64()),
        ("train_location_image", pa.float64()),
        ("train_location_text", pa.float64()),
        ("val_retrieval", pa.float64()),
        ("val_location_image", pa.float64()),
        ("val_location_text", pa.float64()),
        ("weight_retrieval", pa.float64()),
        ("weight_location_image", pa.float64()),
        ("weight_location_text", pa.float64()),
        ("best", pa.bool_()),  # the epoch whose weights are in the checkpoint
        ("checkpoint", STR),  # path of the best checkpoint, relative to the storage root
    ]
)

# Stage 9: the paper's Table 3 (retrieval) and Table 4 (location), long form.
RETRIEVAL_RESULTS = pa.schema(
    [
        ("version", STR),
        ("system", STR),  # multitask / single-task
        ("direction", STR),  # image->text / text->image
        ("medr", pa.float64()),  # mean over the subsets of the median rank (ties pessimistic)
        ("medr_std", pa.float64()),  # its standard deviation over the subsets
        ("r1", pa.float64()),
        ("r5", pa.float64()),
        ("r10", pa.float64()),
        ("subset_size", pa.int32()),
        ("n_subsets", pa.int32()),
        ("n_test", pa.int32()),  # test entities with features
        ("model", STR),
        ("best_epoch", pa.int32()),
    ]
)
LOCATION_RESULTS = pa.schema(
    [
        ("version", STR),
        ("system", STR),  # multitask / single-task
        ("input", STR),  # image / text
        ("precision", pa.float64()),  # support-weighted, top-1 cell
        ("recall", pa.float64()),
        ("f1", pa.float64()),
        ("within_1km", pa.float64()),  # share within the distance, from the predicted cell's mean coordinates
        ("within_25km", pa.float64()),
        ("within_200km", pa.float64()),
        ("within_750km", pa.float64()),
        ("within_2500km", pa.float64()),
        ("n_test", pa.int32()),
        ("model", STR),
        ("best_epoch", pa.int32()),
    ]
)

# Stage 7: features, one fixed-size float32 vector per row, so that training turns a whole table
# into one matrix without per-sample file I/O. Image vectors are the paper's 2048 + 2048 joined
# descriptors; text vectors have the text encoder's width (384 for the default MiniLM, 768 for BERT).
IMAGE_FEATURE_DIM = 4096
IMAGE_FEATURES = pa.schema(
    [("qid", STR), ("file_name", STR), ("vector", pa.list_(pa.float32(), IMAGE_FEATURE_DIM))]
)


def text_features_schema(dim: int) -> pa.Schema:
    """One vector per summary (entity and language): chunk vectors averaged."""
    return pa.schema([("qid", STR), ("lang", STR), ("vector", pa.list_(pa.float32(), dim))])


def class_features_schema(dim: int) -> pa.Schema:
    """One vector per triple class: its English label encoded (its QID when it has no label)."""
    return pa.schema([("qid", STR), ("label", STR), ("vector", pa.list_(pa.float32(), dim))])


def search_index_schema(dim: int) -> pa.Schema:
    """One row per image and per summary, embedded by the chosen model (``dim``: its emb_dim)."""
    return pa.schema(
        [
            ("kind", STR),  # image / text
            ("qid", STR),
            ("item", STR),  # the image's file name, or the summary's language
            ("label", STR),  # the entity's label: English, else German, else French, else its QID
            ("lat", pa.float64()),  # the entity's coordinates
            ("lon", pa.float64()),
            ("sha256", STR),  # of the image bytes, or of the summary text (UTF-8, without surrounding whitespace)
            ("text", STR),  # the summary; null for images
            ("vector", pa.list_(pa.float32(), dim)),  # unit length: a dot product is a cosine
        ]
    )


# Stage 11: the files of a release's package (release_package), the SHA256SUMS as a table.
PACKAGE_MANIFEST = pa.schema(
    [
        ("path", STR),  # relative to the package folder, e.g. mlm_irle/train-00000-of-00001.parquet
        ("bytes", pa.int64()),
        ("sha256", STR),
    ]
)


SORT_KEYS: dict[str, list[str]] = {
    "settlement_classes": ["qid"],
    "entities": ["qid"],
    "entity_dropouts": ["qid", "item", "stage", "reason"],
    "summaries": ["qid", "lang"],
    "images": ["qid", "file_name"],
    "summary_dropouts": ["qid", "item", "stage", "reason"],
    "image_failures": ["qid", "item", "stage", "reason"],
    "images_filtered": ["qid", "file_name"],
    "image_dropouts": ["qid", "item", "stage", "reason"],
    "geo_cells": ["cell"],
    "entity_cells": ["qid"],
    "splits": ["version", "qid"],
    "geo_cell_dropouts": ["qid", "item", "stage", "reason"],
    "mlm": ["qid"],
    "mlm_irle": ["qid"],
    "mlm_irle_gr": ["qid"],
    "mlm_irle_gr_cells": ["cell"],
    "version_dropouts": ["qid", "item", "stage", "reason"],
    "dataset_stats": ["row"],
    "image_features": ["qid", "file_name"],
    "image_feature_dropouts": ["qid", "item", "stage", "reason"],
    "text_features": ["qid", "lang"],
    "class_features": ["qid"],
    "release_diff": ["qid"],
    "learning_curve": ["epoch"],
    "retrieval_results": ["version", "system", "direction"],
    "location_results": ["version", "system", "input"],
    "search_index": ["kind", "qid", "item"],
}


def sort_table(table: pa.Table, name: str) -> pa.Table:
    """Sort rows by the asset's key columns so that the stored bytes do not depend on timing."""
    return table.sort_by([(column, "ascending") for column in SORT_KEYS[name]])


def empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()
