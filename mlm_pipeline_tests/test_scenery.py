"""The embedded world's shared meaning: real geography in, visible in photographs, said in summaries."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from PIL import Image

from mlm_pipeline.assets.features import ImageFeaturesConfig
from mlm_pipeline.encoders.image import build_image_encoder, encode_images
from mlm_pipeline.world.imagegen import Picture, thumbnail_bytes
from mlm_pipeline.world.scenery import FLAGS, Flag, Scenery, climate_band, scenery_for
from mlm_pipeline.world.texts import PlaceFacts, intro


@pytest.mark.parametrize(
    ("name", "lat", "lon", "population", "country", "coast", "mountains", "settlement"),
    [
        ("Marseille", 43.2965, 5.3698, 870_000, "FR", True, False, "city"),
        ("Lyon", 45.7640, 4.8357, 513_000, "FR", False, False, "city"),
        ("Chamonix", 45.9237, 6.8694, 8_900, "FR", False, True, "village"),
        ("Kiel", 54.3233, 10.1228, 246_000, "DE", True, False, "city"),
        ("Garmisch-Partenkirchen", 47.4921, 11.0958, 27_000, "DE", False, True, "town"),
        ("Denver", 39.7392, -104.9903, 715_000, "US", False, True, "city"),
        ("Chicago", 41.8781, -87.6298, 2_700_000, "US", False, False, "city"),  # a lake is not the sea
    ],
)
def test_real_geography_decides_coast_mountains_and_size(name, lat, lon, population, country, coast, mountains, settlement):
    scenery = scenery_for(1, name, lat, lon, population, country, "EU")
    assert (scenery.coast, scenery.mountains, scenery.settlement) == (coast, mountains, settlement)
    assert scenery.flag == Flag(*FLAGS[country]) and scenery.climate == climate_band(lat)
    assert scenery.near is None or scenery.near.city != name


def test_names_that_say_river_or_lake_are_believed():
    assert scenery_for(1, "Châlons-sur-Marne", 48.95, 4.36, 45_000, "FR", "EU").water == "river"
    assert scenery_for(1, "Frankfurt am Main", 50.11, 8.68, 700_000, "DE", "EU").water == "river"
    assert scenery_for(1, "Tegernsee", 47.71, 11.76, 3_600, "DE", "EU").water == "lake"
    assert scenery_for(1, "Lyon", 45.76, 4.83, 513_000, "FR", "EU") == scenery_for(1, "Lyon", 45.76, 4.83, 513_000, "FR", "EU")


def test_every_language_says_what_the_photograph_shows():
    scenery = Scenery("temperate", True, True, "river", "forest", "village", "lighthouse", Flag(*FLAGS["FR"]), None)
    facts = PlaceFacts("Q9000000001", "Port-Blanc", "village", "FR", {"en": "France"}, 48.8, -3.3, 900, scenery=scenery)
    assert all(w in intro(facts, "en") for w in ("sea coast", "mountains", "river", "forest", "few houses", "lighthouse"))
    assert all(w in intro(facts, "de") for w in ("Meeresküste", "Bergen", "Fluss", "Wald", "wenigen Häusern", "Leuchtturm"))
    assert all(w in intro(facts, "fr") for w in ("côte", "montagnes", "rivière", "forêts", "quelques maisons", "phare"))


ATTRIBUTES = ("coast", "mountains", "water", "cover", "settlement")


def random_scenery(rng: random.Random) -> Scenery:
    return Scenery(
        climate=rng.choice(("warm", "temperate")),
        coast=rng.random() < 0.5,
        mountains=rng.random() < 0.5,
        water=rng.choice(("river", "lake", "")),
        cover=rng.choice(("forest", "fields", "desert")),
        settlement=rng.choice(("city", "town", "village")),
        landmark=rng.choice(("church", "castle", "")),
        flag=Flag(*FLAGS[rng.choice(("FR", "DE", "US", "PL"))]),
        near=None,
    )


def test_a_linear_probe_on_the_default_image_features_reads_the_scenery():
    """The packaged EfficientNet-Lite0 tells the drawn attributes apart: a linear probe on its
    features, on held-out photographs, beats each attribute's majority share by a wide margin."""
    rng = random.Random(7)
    sceneries = [random_scenery(rng) for _ in range(360)]
    contents = [
        thumbnail_bytes(Picture(f"Probe {i}.jpg", "photo", "jpeg", 45.0, 5.0, 4000, 3000, scenery=s), 250)
        for i, s in enumerate(sceneries)
    ]
    assert Image.open(io.BytesIO(contents[0])).size == (250, 188)
    encoder = build_image_encoder(ImageFeaturesConfig().branches())
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        features = encode_images(encoder, contents, device=torch.device("cpu"), batch_size=60, workers=1).vectors[:, :1280]
    finally:
        torch.set_num_threads(previous)
    train, test = np.arange(len(contents)) < 270, np.arange(len(contents)) >= 270
    x = (features - features[train].mean(0)) / (features[train].std(0) + 1e-6)
    for attribute in ATTRIBUTES:
        y = np.array([s.visual()[attribute] for s in sceneries])
        classes, codes = np.unique(y, return_inverse=True)
        torch.manual_seed(0)
        layer = torch.nn.Linear(x.shape[1], len(classes))
        optimiser = torch.optim.Adam(layer.parameters(), lr=1e-2, weight_decay=1e-3)
        xt, yt = torch.from_numpy(x[train].astype(np.float32)), torch.from_numpy(codes[train])
        for _ in range(200):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(layer(xt), yt).backward()
            optimiser.step()
        with torch.no_grad():
            predicted = layer(torch.from_numpy(x[test].astype(np.float32))).argmax(1).numpy()
        accuracy = float((predicted == codes[test]).mean())
        majority = np.bincount(codes[test]).max() / test.sum()
        assert accuracy >= majority + 0.25, f"{attribute}: probe {accuracy:.2f}, majority {majority:.2f}"
