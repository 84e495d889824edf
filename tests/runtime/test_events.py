"""The event engine computes the dense simulation's network: ``python -m pytest tests/test_events.py -q``.

Tolerances (style guide, rule 13): float64 models ≤ 1e-9 max abs diff over streams (every scheme, clips and
streaming, several streams); float32 models see tests/test_events_float32.py. Each model runs three ways: the
measured break-even (``"auto"``), every layer on its event path (``"events"``: only a stream's first frame is
dense) and every layer dense (``"dense"``). Integers (paths, op counts) are compared exactly.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sigmadelta
from sigmadelta.testing import correlated_stream, mlp, residual_cnn, vgg_style_cnn

SCHEMES = {"sigma-delta": {}, "hysteresis": {"h": 0.3}, "threshold": {"theta": 0.05}}
POLICIES = ("auto", "events", "dense")


class Odd(nn.Module):
    """What the toy models lack: grouped (not depthwise), strided + dilated, depthwise with channel multiplier,
    F.conv1d, a constant pad via F.pad, scalar arithmetic, hardswish, a partial mean."""

    def __init__(self):
        super().__init__()
        self.grouped = nn.Conv2d(4, 6, 3, padding=1, groups=2)
        self.strided = nn.Conv2d(6, 6, 3, stride=2, dilation=2, padding=2)
        self.multiplier = nn.Conv2d(6, 12, 3, padding=1, groups=6, bias=False)
        self.conv1d_weight = nn.Parameter(torch.randn(5, 12, 3) * 0.3)
        self.fc = nn.Linear(5 * 4, 3)

    def forward(self, x):  # x: (B, 4, 8, 8)
        y = F.hardswish(self.grouped(x))
        y = 1.0 - torch.relu(self.strided(y)) * 0.5  # (B, 6, 4, 4)
        y = F.pad(y, (1, 1, 1, 1))  # (B, 6, 6, 6)
        y = F.relu6(self.multiplier(y))  # (B, 12, 6, 6)
        y = y.mean(3)  # (B, 12, 6)
        y = F.conv1d(y, self.conv1d_weight, stride=1, padding=0)  # (B, 5, 4)
        return self.fc(F.relu(y).flatten(1))


class Video3d(nn.Module):
    """A 3-D convolution (stride, padding) and a depthwise one, then a 1×1×1 projection and a pooled head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(2, 4, 3, stride=(1, 2, 2), padding=1)
        self.depthwise = nn.Conv3d(4, 4, 3, padding=1, groups=4)
        self.project = nn.Conv3d(4, 3, 1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):  # x: (B, 2, 4, 6, 6)
        y = torch.relu(self.depthwise(F.relu(self.conv(x))))
        return self.fc(self.project(y).mean((2, 3, 4)))


class Fire(nn.Module):
    """SqueezeNet's structure in small: a squeeze, two expands of one input concatenated, max-pooling
    (ceil mode), a 1x1 classifier, ReLU, global average and flatten."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.squeeze = nn.Conv2d(8, 4, 1)
        self.expand1 = nn.Conv2d(4, 6, 1)
        self.expand3 = nn.Conv2d(4, 6, 3, padding=1)
        self.head = nn.Conv2d(12, 5, 1)

    def forward(self, x):  # x: (B, 3, 17, 17)
        y = self.pool(F.relu(self.conv(x)))
        s = F.relu(self.squeeze(y))
        y = torch.cat([F.relu(self.expand1(s)), F.relu(self.expand3(s))], 1)
        return torch.flatten(F.adaptive_avg_pool2d(F.relu(self.head(self.pool(y))), 1), 1)


MODELS = {  # name -> (model factory, frame shape, scale k)
    "mlp": (lambda: mlp((24, 40, 40, 6)), (24,), 6.0),
    "vgg": (lambda: vgg_style_cnn(3, (4, 8), size=8), (3, 8, 8), 6.0),
    "residual": (lambda: residual_cnn(channels=6, expand=2, blocks=2), (3, 10, 10), 6.0),
    "fire": (Fire, (3, 17, 17), 6.0),
    "odd": (Odd, (4, 8, 8), 6.0),
    "conv3d": (Video3d, (2, 4, 6, 6), 6.0),
}


def nets(name: str, dtype=torch.float64, scheme: str = "sigma-delta", per_channel: bool = False, policy="auto"):
    """``(dense, events, frame shape)``: two converted copies of one model, same scales and scheme."""
    torch.manual_seed(0)
    make, shape, k = MODELS[name]
    model = make().eval().to(dtype)
    pair = []
    for _ in range(2):
        net = sigmadelta.convert(model, torch.zeros(1, *shape, dtype=dtype), per_channel_scales=per_channel)
        net.set_scales({q: (torch.full_like(s, k) * torch.linspace(0.5, 1.5, s.numel()).reshape(s.shape)
                            if isinstance(s, torch.Tensor) else k) for q, s in net.scales.items()})
        net.set_scheme(scheme, **SCHEMES[scheme])
        pair.append(net.set_mode("sigma-delta"))
    pair[1].set_backend("events")
    pair[1].engine.set_policy(policy)
    return pair[0], pair[1], shape


def clip_of(shape, steps=20, batch=2, seed=1, dtype=torch.float64):
    return correlated_stream(steps, shape, batch=batch, step_std=0.03, dtype=dtype,
                             generator=torch.Generator().manual_seed(seed))


def assert_exact(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert (out - ref).abs().max().item() <= 1e-9


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("name", list(MODELS))
def test_equals_the_dense_simulation(name, scheme, policy):
    dense, events, shape = nets(name, scheme=scheme, policy=policy)
    clip = clip_of(shape)
    assert_exact(events.run(clip), dense.run(clip))
    paths = events.engine.paths()
    assert all(p["dense"] >= 1 for p in paths.values())  # a stream's first frame
    if policy == "events":
        assert all(p["dense"] == 1 for p in paths.values()), paths
        assert sum(p["sparse"] for p in paths.values()) > 0
    if policy == "dense":
        assert all(p["sparse"] == 0 for p in paths.values()), paths


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("name", ["mlp", "residual", "fire", "odd"])
def test_long_streams_per_channel_scales_and_many_streams(name, scheme):
    dense, events, shape = nets(name, scheme=scheme, per_channel=True, policy="events")
    clip = clip_of(shape, steps=60, batch=3, seed=2)
    assert_exact(events.run(clip), dense.run(clip))


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_streaming_chaining_and_reset(scheme):
    dense, events, shape = nets("residual", scheme=scheme, policy="events")
    clip = clip_of(shape, steps=16, seed=3)
    ref = dense.run(clip)
    chained = torch.cat([events.run(clip[:5]), torch.stack([events(f) for f in clip[5:9]]), events.run(clip[9:])])
    assert_exact(chained, ref)
    events.reset()
    assert_exact(events.run(clip), ref)


def test_policies_may_change_mid_stream():
    dense, events, shape = nets("fire")
    clip = clip_of(shape, steps=12, seed=10)
    ref = dense.run(clip)
    outs = []
    for i, policy in enumerate(["dense", "events", "auto", {"head": "dense"}]):
        events.engine.set_policy(policy)
        outs.append(events.run(clip[3 * i: 3 * i + 3]))
    assert_exact(torch.cat(outs), ref)
    with pytest.raises(ValueError, match="unknown policy"):
        events.engine.set_policy("fast")


@pytest.mark.parametrize("policy", ["events", "dense"])
def test_inference_mode_on_and_off(policy):
    dense, events, shape = nets("residual", policy=policy)
    clip = clip_of(shape, steps=9, seed=9)
    ref = dense.run(clip)
    with torch.inference_mode():
        first = events.run(clip[:3])
    middle = events.run(clip[3:6])
    with torch.inference_mode():
        last = events.run(clip[6:])
    assert_exact(torch.cat([first, middle, last]), ref)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_op_counts_match_the_dense_path(scheme):
    dense, events, shape = nets("fire", scheme=scheme, policy="events")
    clip = clip_of(shape, steps=10, seed=4)
    dense.run(clip)
    events.run(clip)
    expected, got = dense.op_counts(), events.op_counts()
    assert got.steps == expected.steps == 10
    for kind in expected.kinds:
        for layer, ops in expected.per_layer(kind).items():
            assert got.per_layer(kind)[layer] == ops, (kind, layer)  # integers: exact


def test_counting_off_leaves_counts_empty():
    dense, events, shape = nets("mlp")
    clip = clip_of(shape, steps=6, seed=5)
    events.counting = False
    assert_exact(events.run(clip), dense.run(clip))
    assert events.op_counts().steps == 0


def test_scale_changes_are_picked_up():
    dense, events, shape = nets("vgg", policy="events")
    clip = clip_of(shape, steps=6, seed=6)
    events.run(clip)  # builds the plan with the old scales
    for net in (dense, events):
        net.set_scales({name: 3.0 for name in net.scales})
    assert_exact(events.run(clip), dense.run(clip))


def test_a_quiet_stream_does_no_work():
    dense, events, shape = nets("residual", policy="events")
    clip = clip_of(shape, steps=1).expand(6, *([-1] * (len(shape) + 1))).clone()
    assert_exact(events.run(clip), dense.run(clip))
    assert all(p == {"sparse": 0, "dense": 1, "idle": 5} for p in events.engine.paths().values())
    assert all(a == 0.0 for a in events.engine.activity().values())


def test_a_batch_size_change_needs_a_reset_and_rebuilds():
    dense, events, shape = nets("mlp", policy="events")
    events.run(clip_of(shape, steps=3, batch=2))
    with pytest.raises(sigmadelta.StreamError, match="reset"):
        events.run(clip_of(shape, steps=3, batch=4))
    events.reset()
    clip = clip_of(shape, steps=5, batch=4, seed=8)
    assert_exact(events.run(clip), dense.run(clip))
    assert events.engine.batch_size == 4


# ---------------------------------------------------------------------------------------------------------
# the plan: what is fused away


def _step_kinds(net) -> dict[str, int]:
    names = [type(step).__name__ for step in net.engine.plan.steps]
    return {name: names.count(name) for name in set(names)}


def test_concatenations_are_built_in_place_and_activations_are_not_stored():
    _, events, shape = nets("fire")
    events.run(clip_of(shape, steps=2))
    plan = events.engine.plan
    kinds = _step_kinds(events)
    assert "CatStep" not in kinds and "ApplyStep" not in kinds and "DenseOpStep" not in kinds, kinds
    assert kinds == {"QuantizeStep": 4, "LayerStep": 5, "PoolStep": 2, "MeanStep": 1}
    expands = [layer for layer in plan.layers if layer.name.startswith("expand")]
    assert expands[0].out.storage is expands[1].out.storage  # one storage, two channel slices
    assert [layer.out.c0 for layer in expands] == [0, 6]
    assert expands[0].q is expands[1].q  # one quantizer feeds both


def test_a_zero_pad_before_a_quantizer_folds_into_its_convolutions():
    _, events, shape = nets("residual")
    events.run(clip_of(shape, steps=2))
    assert "PadStep" not in _step_kinds(events)
    depthwise = [layer for layer in events.engine.plan.layers if "depthwise" in layer.name]
    assert depthwise and all(layer.pad == (1, 1, 1, 1) for layer in depthwise)


def test_a_flatten_before_a_quantizer_folds_into_the_layer():
    _, events, shape = nets("vgg")
    events.run(clip_of(shape, steps=2))
    assert _step_kinds(events) == {"QuantizeStep": 6, "LayerStep": 6, "PoolStep": 2}
    assert events.engine.plan.quantizers[4].flatten


def test_diagnostics():
    _, events, shape = nets("fire", policy="events")
    events.run(clip_of(shape, steps=8))
    engine = events.engine
    assert set(engine.paths()) == set(engine.activity()) == set(engine.break_even()) == set(events.layers)
    assert all(0.0 < a <= 1.0 for a in engine.activity().values())
    assert all(b > 0.0 for b in engine.break_even().values())
    mem = engine.memory()
    assert mem["state_bytes"] > 0 and mem["plan_bytes"] > mem["weight_bytes"] > 0
    engine.profile = True
    events.run(clip_of(shape, steps=3, seed=3))
    assert set(engine.timings) == {step.name for step in engine.plan.steps}
