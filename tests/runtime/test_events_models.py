"""The event engine on the pre-trained networks: ``python -m pytest tests/test_events_models.py -q``.

SqueezeNet v1.1 (fire modules: two convolutions of one quantizer concatenated, ceil-mode max-pooling, the pooled
1x1 classifier) and EfficientNet-Lite0 (static zero padding, depthwise and strided convolutions, ReLU6, residual
adds, the pooled head), in float64 on small frames (fast, every scheme) and, marked slow, on a real clip at full
size in float32.
"""

import pytest
import torch

import sigmadelta
from sigmadelta.runtime.events.flips import message_mismatch
from sigmadelta.testing import correlated_stream

models = pytest.importorskip("sigmadelta.models")
SCHEMES = {"sigma-delta": {}, "hysteresis": {"h": 0.3}, "threshold": {"theta": 0.05}}
SMALL = {"squeezenet1_1": (3, 63, 63), "efficientnet-lite0": (3, 64, 64)}


def _bundle(name):
    try:
        return models.get(name, progress=False)
    except Exception as e:  # the packages with the weights are optional
        pytest.skip(f"{name} is not available: {type(e).__name__}: {e}")


def _pair(model, example, scheme, scales=None):
    pair = []
    for _ in range(2):
        net = sigmadelta.convert(model, example)
        if scales:
            net.set_scales({q: scales for q in net.scales})
        pair.append(net.set_scheme(scheme, **SCHEMES[scheme]).set_mode("sigma-delta"))
    pair[1].set_backend("events")
    return pair


def _kinds(net):
    names = [type(step).__name__ for step in net.engine.plan.steps]
    return {name: names.count(name) for name in set(names)}


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("name", list(SMALL))
def test_float64_equals_the_dense_simulation(name, scheme):
    shape = SMALL[name]
    model = _bundle(name).model.double()
    dense, events = _pair(model, torch.zeros(1, *shape, dtype=torch.float64), scheme,
                          scales=None if scheme == "threshold" else 8.0)
    events.engine.set_policy("events")
    clip = correlated_stream(8, shape, batch=2, step_std=0.02, dtype=torch.float64,
                             generator=torch.Generator().manual_seed(0))
    assert (events.run(clip) - dense.run(clip)).abs().max().item() <= 1e-9
    assert sum(p["sparse"] for p in events.engine.paths().values()) > 0


def test_squeezenet_fire_modules_are_fused():
    """Every fire module's two expands write one storage in place, its ReLUs are never stored, and nothing runs
    through torch but the dense forms: one quantizer per input, 26 layers, 3 pools, the average."""
    dense, events = _pair(_bundle("squeezenet1_1").model.double(), torch.zeros(1, *SMALL["squeezenet1_1"],
                                                                            dtype=torch.float64), "threshold")
    events.run(correlated_stream(2, SMALL["squeezenet1_1"], dtype=torch.float64))
    assert _kinds(events) == {"QuantizeStep": 18, "LayerStep": 26, "PoolStep": 3, "MeanStep": 1}
    layers = {layer.name: layer for layer in events.engine.plan.layers}
    for fire in range(2, 10):
        one, three = layers[f"features.fire{fire}.expand1x1"], layers[f"features.fire{fire}.expand3x3"]
        assert one.out.storage is three.out.storage and one.q is three.q
        assert (one.out.c0, three.out.c0) == (0, one.out.channels)


def test_efficientnet_pads_fold_into_the_convolutions():
    dense, events = _pair(_bundle("efficientnet-lite0").model.double(),
                          torch.zeros(1, *SMALL["efficientnet-lite0"], dtype=torch.float64), "threshold")
    events.run(correlated_stream(2, SMALL["efficientnet-lite0"], dtype=torch.float64))
    kinds = _kinds(events)
    assert "PadStep" not in kinds and "DenseOpStep" not in kinds and "CatStep" not in kinds, kinds
    assert kinds["AddStep"] == 9 and kinds["MeanStep"] == 1
    padded = [layer for layer in events.engine.plan.layers if layer.pad is not None]
    assert len(padded) == 17  # the stem and the 16 depthwise convolutions


@pytest.mark.slow
@pytest.mark.parametrize("name, scheme", [("squeezenet1_1", "threshold"), ("efficientnet-lite0", "sigma-delta")])
def test_float32_flips_no_more_often_than_the_simulations_own(name, scheme):
    """Full size, float32, carphone: the engine gives the float32 simulation's top-1, and its messages differ from
    that simulation's (float32 flips) no more often than 3x as often as the float32 simulation's own differ from
    the float64 simulation's (the network's float32 noise: measured 1e-2 of unit-frames on EfficientNet-Lite0 at
    k = 4, 7e-7 on SqueezeNet with thresholds)."""
    import copy

    from sigmadelta import data

    bundle = _bundle(name)
    frames = data.load_clip("carphone", bundle, max_frames=10)
    scales = None if scheme == "threshold" else 4.0
    dense, events = _pair(bundle.model, bundle.example_input(), scheme, scales=scales)
    exact, _ = _pair(copy.deepcopy(bundle.model).double(), bundle.example_input().double(), scheme, scales=scales)
    engine = message_mismatch(dense, events, frames, chunk=5)
    floor = message_mismatch(exact, dense.dense_copy("sigma-delta"), frames.double(), chunk=5, cast=True)
    ref, out = engine["outputs"]
    assert torch.equal(out.argmax(-1), ref.argmax(-1))
    assert engine["rate"] <= 3 * floor["rate"] + 1e-6, (engine["rate"], floor["rate"])
