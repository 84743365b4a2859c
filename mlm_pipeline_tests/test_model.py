"""The network, its losses and the feature-table loader, on small synthetic feature tables."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from mlm_pipeline import schemas
from mlm_pipeline.model.data import load_version
from mlm_pipeline.model.losses import Objective, Pairs, TaskWeighting, sample_pairs, task_losses
from mlm_pipeline.model.networks import MLMNet, ModelShape, Outputs, l2_normalise
from mlm_pipeline.model.tasks import LOCATION_IMAGE, LOCATION_TEXT, RETRIEVAL


def synthetic_tables(
    n_entities: int = 240,
    n_cells: int = 6,
    image_dim: int = 24,
    text_dim: int = 12,
    seed: int = 0,
    versions: tuple[str, ...] = ("mlm_irle",),
) -> dict[str, pa.Table]:
    """Feature tables shaped like the pipeline's, whose vectors carry the entity's cell and identity.

    Images and texts are noisy projections of (entity code, cell code), so a model can learn
    both retrieval and location; every entity has 1-2 images and 1-3 languages.
    """
    rng = np.random.default_rng(seed)
    qids = [f"Q{9000000000 + i}" for i in range(n_entities)]
    cells = np.arange(n_entities) % n_cells
    cell_lat, cell_lon = rng.uniform(-60, 60, n_cells), rng.uniform(-170, 170, n_cells)
    lat = cell_lat[cells] + rng.normal(0, 0.3, n_entities)
    lon = cell_lon[cells] + rng.normal(0, 0.3, n_entities)
    code = np.concatenate([rng.normal(size=(n_entities, 8)), rng.normal(size=(n_cells, 8))[cells] * 2], axis=1)
    to_image, to_text = rng.normal(size=(16, image_dim)), rng.normal(size=(16, text_dim))
    class_qids = [f"Q{100 + c}" for c in range(5)]
    classes = [sorted({class_qids[i % 5], class_qids[(i * 7) % 5]}) for i in range(n_entities)]
    split = ["train" if i % 10 < 6 else "val" if i % 10 < 8 else "test" for i in range(n_entities)]
    image_rows, text_rows = [], []
    for i, qid in enumerate(qids):
        for k in range(1 + i % 2):
            vector = code[i] @ to_image + rng.normal(0, 0.3, image_dim)
            image_rows.append({"qid": qid, "file_name": f"{qid}_{k}.jpg", "vector": vector.astype(np.float32).tolist()})
        for lang in ("de", "en", "fr")[: 1 + i % 3]:
            vector = code[i] @ to_text + rng.normal(0, 0.3, text_dim)
            text_rows.append({"qid": qid, "lang": lang, "vector": vector.astype(np.float32).tolist()})
    version = pa.table(
        {
            "qid": qids,
            "lat": lat,
            "lon": lon,
            "country_code": ["FR"] * n_entities,
            "continent": ["Europe"] * n_entities,
            "cell": pa.array(cells, pa.int32()),
            "classes": classes,
            "n_images": pa.array([1 + i % 2 for i in range(n_entities)], pa.int32()),
            "n_summaries": pa.array([1 + i % 3 for i in range(n_entities)], pa.int32()),
            "languages": [["de", "en", "fr"][: 1 + i % 3] for i in range(n_entities)],
        },
        schema=schemas.VERSION,
    )
    geo_cells = pa.table(
        {
            "cell": pa.array(range(n_cells), pa.int32()),
            "token": [f"t{c}" for c in range(n_cells)],
            "level": pa.array([5] * n_cells, pa.int8()),
            "count": pa.array(np.bincount(cells, minlength=n_cells), pa.int32()),
            "mean_lat": cell_lat,
            "mean_lon": cell_lon,
        },
        schema=schemas.GEO_CELLS,
    )
    tables = {
        "splits": pa.table(
            {"version": [v for v in versions for _ in qids], "qid": qids * len(versions), "split": split * len(versions)},
            schema=schemas.SPLITS,
        ),
        # the pipeline's feature schemas, but with small image vectors
        "image_features": pa.Table.from_pylist(image_rows, schema=schemas.IMAGE_FEATURES.set(
            2, pa.field("vector", pa.list_(pa.float32(), image_dim)))),
        "text_features": pa.Table.from_pylist(text_rows, schema=schemas.text_features_schema(text_dim)),
        "class_features": pa.table(
            {"qid": class_qids, "label": class_qids, "vector": rng.normal(size=(5, text_dim)).astype(np.float32).tolist()},
            schema=schemas.class_features_schema(text_dim),
        ),
        "geo_cells": geo_cells,
    }
    for name in versions:
        tables[name] = version
    return tables


def load(tables: dict[str, pa.Table], version: str = "mlm_irle", n_cells: int | None = None):
    return load_version(
        version,
        tables[version],
        tables["splits"],
        tables["image_features"],
        tables["text_features"],
        tables["class_features"],
        "test_stage",
        n_cells=n_cells,
    )


def shape(task: str = "multitask", text_dim: int = 12) -> ModelShape:
    return ModelShape(task=task, image_dim=24, text_dim=text_dim, class_dim=text_dim, n_cells=6, emb_dim=16)  # type: ignore[arg-type]


@pytest.mark.parametrize("task", ["multitask", "ir", "le"])
@pytest.mark.parametrize("text_dim", [384, 768])
def test_every_system_embeds_to_unit_vectors_for_any_text_encoder(task: str, text_dim: int) -> None:
    torch.manual_seed(0)
    net = MLMNet(shape(task, text_dim)).eval()
    out = net(torch.randn(5, 24), torch.randn(5, text_dim), torch.randn(5, text_dim))
    assert out.image.shape == out.text.shape == (5, 16)
    assert torch.allclose(out.image.norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(out.text.norm(dim=1), torch.ones(5), atol=1e-5)
    if task == "ir":
        assert out.image_logits is None and out.text_logits is None
    else:
        assert out.image_logits.shape == out.text_logits.shape == (5, 6)


def test_the_image_branch_is_conv1d_relu_linear_tanh_and_the_norm_is_clamped() -> None:
    net = MLMNet(shape())
    branch = net.image_branch
    assert isinstance(branch.conv, torch.nn.Conv1d) and branch.conv.kernel_size == (1,)
    x = torch.randn(3, 24)
    by_hand = torch.tanh(branch.fc(torch.relu(branch.conv.weight.squeeze(-1) @ x.T + branch.conv.bias[:, None]).T))
    assert torch.allclose(branch(x), by_hand / by_hand.norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.equal(l2_normalise(torch.zeros(2, 4)), torch.zeros(2, 4))  # clamp: no NaN for a zero vector
    with pytest.raises(ValueError, match="task"):
        ModelShape(task="both", image_dim=1, text_dim=1, class_dim=1, n_cells=2)  # type: ignore[arg-type]


@pytest.mark.parametrize("batch", [2, 3, 7, 128])
def test_half_the_pairs_are_negatives_and_a_negative_is_another_entity(batch: int) -> None:
    pairs = sample_pairs(batch, torch.Generator().manual_seed(batch))
    negative = pairs.target == -1
    assert int(negative.sum()) == batch // 2
    rows = torch.arange(batch)
    assert torch.equal(pairs.image_index[~negative], rows[~negative])
    assert bool((pairs.image_index[negative] != rows[negative]).all())
    assert bool(((pairs.image_index >= 0) & (pairs.image_index < batch)).all())


def test_a_negative_pair_never_reaches_a_location_loss_with_a_wrong_label() -> None:
    """The location losses are those of each row's own image/text with its own cell, whatever the pairs."""
    torch.manual_seed(1)
    net = MLMNet(shape()).eval()
    cells = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])
    with torch.no_grad():
        out = net(torch.randn(8, 24), torch.randn(8, 12), torch.randn(8, 12))
    names = (RETRIEVAL, LOCATION_IMAGE, LOCATION_TEXT)
    positives = Pairs(torch.arange(8), torch.ones(8))
    every_other = Pairs(torch.tensor([1, 0, 3, 2, 5, 4, 7, 6]), -torch.ones(8))
    sampled = sample_pairs(8, torch.Generator().manual_seed(0))
    results = [task_losses(out, cells, pairs, names) for pairs in (positives, every_other, sampled)]
    own_image = F.cross_entropy(out.image_logits, cells)
    # the reference code's defect: a swapped-in image labelled with the anchor's cell
    defect = F.cross_entropy(out.image_logits[every_other.image_index], cells)
    for losses in results:
        assert torch.equal(losses[LOCATION_IMAGE], own_image)
        assert torch.equal(losses[LOCATION_TEXT], F.cross_entropy(out.text_logits, cells))
    assert not torch.isclose(own_image, defect)
    assert len({round(float(r[RETRIEVAL]), 6) for r in results}) == 3  # the pairs do shape retrieval


def test_cosine_loss_is_the_papers_equation_1() -> None:
    image = l2_normalise(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]))
    text = l2_normalise(torch.tensor([[0.8, 0.6], [0.6, 0.8], [1.0, 0.0]]))
    out = Outputs(image, text, None, None)
    pairs = Pairs(torch.tensor([0, 2, 0]), torch.tensor([1.0, -1.0, -1.0]))
    # row 0: 1 - cos = 1 - 0.8; row 1: image 2 vs text 1, max(0, 0.8 - 0.1); row 2: image 0 vs text 2, max(0, 1 - 0.1)
    expected = ((1 - 0.8) + 0.7 + 0.9) / 3
    got = task_losses(out, torch.zeros(3, dtype=torch.long), pairs, (RETRIEVAL,))
    assert float(got[RETRIEVAL]) == pytest.approx(expected, abs=1e-6)


def test_task_weighting_uses_log_variances_and_leaves_a_lone_task_plain() -> None:
    weighting = TaskWeighting((RETRIEVAL, LOCATION_IMAGE, LOCATION_TEXT))
    with torch.no_grad():
        weighting.log_vars.copy_(torch.tensor([0.5, -1.0, 2.0]))
    losses = {RETRIEVAL: torch.tensor(0.3), LOCATION_IMAGE: torch.tensor(2.0), LOCATION_TEXT: torch.tensor(1.5)}
    expected = np.mean([math.exp(-0.5) * 0.3 + 0.25, math.exp(1.0) * 2.0 - 0.5, math.exp(-2.0) * 1.5 + 1.0])
    assert float(weighting(losses).detach()) == pytest.approx(expected, rel=1e-6)
    assert weighting.weights()[LOCATION_IMAGE] == pytest.approx(math.exp(1.0))
    lone = TaskWeighting((RETRIEVAL,))
    assert list(lone.parameters()) == [] and float(lone({RETRIEVAL: torch.tensor(0.3)})) == pytest.approx(0.3)
    objective = Objective(MLMNet(shape("multitask")))
    assert any(p is objective.weighting.log_vars for p in objective.parameters())


def test_loader_averages_languages_and_classes_and_orders_images_by_file_name() -> None:
    tables = synthetic_tables(n_entities=30)
    data = load(tables, n_cells=6)
    train = data.splits["train"]
    assert (data.image_dim, data.text_dim, data.class_dim, data.n_cells) == (24, 12, 12, 6)
    assert list(train.qids) == sorted(train.qids)
    assert sum(len(s) for s in data.splits.values()) == 30 and data.dropouts.num_rows == 0
    qid = next(q for q in train.qids if int(q[-2:]) % 3 == 2)  # an entity with three languages
    i = train.qids.index(qid)
    texts = tables["text_features"].filter(pa.compute.equal(tables["text_features"].column("qid"), qid))
    assert texts.num_rows == 3
    assert np.allclose(train.summary[i].numpy(), np.array(texts.column("vector").to_pylist()).mean(axis=0), atol=1e-6)
    classes = tables["mlm_irle"].filter(pa.compute.equal(tables["mlm_irle"].column("qid"), qid)).column("classes")[0].as_py()
    class_rows = [tables["class_features"].column("qid").to_pylist().index(c) for c in classes]
    expected_class = np.array(tables["class_features"].column("vector").to_pylist())[class_rows].mean(axis=0)
    assert np.allclose(train.classes[i].numpy(), expected_class, atol=1e-6)
    two = next(j for j, q in enumerate(train.qids) if int(q[-2:]) % 2 == 1)
    images = tables["image_features"].filter(pa.compute.equal(tables["image_features"].column("qid"), train.qids[two]))
    first = images.sort_by("file_name").column("vector")[0].as_py()
    assert int(train.image_count[two]) == 2
    assert np.allclose(train.first_images()[two].numpy(), first)
    rows = train.image_rows(torch.Generator().manual_seed(0))
    assert bool(((rows >= train.image_start) & (rows < train.image_start + train.image_count)).all())


def test_entities_without_features_drop_out_with_a_reason() -> None:
    tables = synthetic_tables(n_entities=30)
    qids = tables["mlm_irle"].column("qid").to_pylist()
    images = tables["image_features"]
    tables["image_features"] = images.filter(pa.compute.not_equal(images.column("qid"), qids[0]))
    texts = tables["text_features"]
    tables["text_features"] = texts.filter(pa.compute.not_equal(texts.column("qid"), qids[1]))
    data = load(tables)
    assert data.dropouts.schema == schemas.DROPOUTS
    assert data.dropouts.select(["qid", "reason"]).to_pylist() == [
        {"qid": qids[0], "reason": "no_image_features"},
        {"qid": qids[1], "reason": "no_text_features"},
    ]
    assert sum(len(s) for s in data.splits.values()) == 28


def test_inconsistent_inputs_fail_with_a_message_naming_them() -> None:
    tables = synthetic_tables(n_entities=30)
    with pytest.raises(ValueError, match=r"splits has no rows for version 'mlm_irle_gr'; it has \['mlm_irle'\]"):
        load({**tables, "mlm_irle_gr": tables["mlm_irle"]}, version="mlm_irle_gr")
    with pytest.raises(ValueError, match="mlm_irle uses geo-cell labels 0..5, but its cell table has 4 cells"):
        load(tables, n_cells=4)
    short = tables["splits"].slice(1)
    with pytest.raises(ValueError, match="1 entities without a split"):
        load({**tables, "splits": short})
    with pytest.raises(ValueError, match=r"image_features lacks column\(s\) \['vector'\]"):
        load({**tables, "image_features": tables["image_features"].drop_columns(["vector"])})
