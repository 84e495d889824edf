"""The sparse backend computes the dense simulation's network: ``python -m pytest tests/test_sparse.py -q``.

Tolerances (style guide, rule 13): float64 models ≤ 1e-9 max abs diff over streams; float32 models
``rtol=1e-4`` and ``atol=1e-5·max|out|`` (float32 precision) with identical argmax. Each model is run three ways:
with the measured thresholds (``"auto"``), with every layer forced onto its sparse path (``"sparse"``: only the
first frame of a stream is dense), and forced dense (``"dense"``).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sigmadelta
from sigmadelta.accounting import fanout_map
from sigmadelta.core.modules import SigmaDeltaLinear
from sigmadelta.runtime._indexmaps import conv_targets
from sigmadelta.runtime.sparse import DENSE_ABOVE, engine_of
from sigmadelta.testing import correlated_stream, mlp, residual_cnn, vgg_style_cnn

ALL_SPARSE = dict.fromkeys(DENSE_ABOVE, 1.0)
ALL_DENSE = dict.fromkeys(DENSE_ABOVE, 0.0)
POLICIES = {"auto": None, "sparse": ALL_SPARSE, "dense": ALL_DENSE}


class Odd(nn.Module):
    """Convolutions the toy models lack: grouped (not depthwise), strided + dilated, depthwise with channel
    multiplier, conv1d via reshape-free F.conv1d, a constant pad via F.pad, scalar arithmetic, hardswish."""

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


MODELS = {
    "mlp": (lambda: mlp((24, 40, 40, 6)), (24,), 6.0),
    "vgg": (lambda: vgg_style_cnn(3, (4, 8), size=8), (3, 8, 8), 6.0),
    "residual": (lambda: residual_cnn(channels=6, expand=2, blocks=2), (3, 10, 10), 6.0),
    "odd": (Odd, (4, 8, 8), 6.0),
    "conv3d": (Video3d, (2, 4, 6, 6), 6.0),
}


def _nets(name: str, dtype: torch.dtype, per_channel: bool = False):
    torch.manual_seed(0)
    make, shape, k = MODELS[name]
    model = make().eval().to(dtype)
    dense = sigmadelta.convert(model, torch.zeros(1, *shape, dtype=dtype), per_channel_scales=per_channel)
    scales = {}
    for qname, scale in dense.scales.items():
        scales[qname] = (torch.full_like(scale, k) * torch.linspace(0.5, 1.5, scale.numel()).reshape(scale.shape)
                         if isinstance(scale, torch.Tensor) else k)
    dense.set_scales(scales)
    sparse = sigmadelta.convert(model, torch.zeros(1, *shape, dtype=dtype), per_channel_scales=per_channel)
    sparse.set_scales(scales)
    dense.set_mode("sigma-delta")
    sparse.set_mode("sigma-delta").set_backend("sparse")
    return dense, sparse, shape


def _assert_matches(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    if dtype == torch.float64:
        assert (out - ref).abs().max().item() <= 1e-9
    else:
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
        assert torch.equal(out.argmax(-1), ref.argmax(-1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("name", list(MODELS))
def test_sparse_equals_dense_simulation(name, policy, dtype):
    dense, sparse, shape = _nets(name, dtype)
    if POLICIES[policy]:
        engine_of(sparse).set_dense_above(**POLICIES[policy])
    clip = correlated_stream(25, shape, batch=1, step_std=0.03, dtype=dtype, generator=torch.Generator().manual_seed(1))
    ref = dense.run(clip)
    out = sparse.run(clip)
    _assert_matches(out, ref, dtype)
    paths = engine_of(sparse).paths()
    if policy == "sparse":  # every layer with an active input took the sparse path after the first frame
        assert all(p["dense"] == 1 for p in paths.values()), paths
        assert sum(p["sparse"] for p in paths.values()) > 0
    if policy == "dense":
        assert all(p["sparse"] == 0 for p in paths.values()), paths


@pytest.mark.parametrize("name", ["mlp", "residual", "odd"])
def test_batch_of_streams_and_per_channel_scales(name):
    dense, sparse, shape = _nets(name, torch.float64, per_channel=True)
    engine_of(sparse).set_dense_above(**ALL_SPARSE)
    clip = correlated_stream(12, shape, batch=3, step_std=0.03, dtype=torch.float64,
                             generator=torch.Generator().manual_seed(2))
    _assert_matches(sparse.run(clip), dense.run(clip), torch.float64)


def test_streaming_chaining_and_reset():
    dense, sparse, shape = _nets("residual", torch.float64)
    engine_of(sparse).set_dense_above(**ALL_SPARSE)
    clip = correlated_stream(16, shape, batch=2, step_std=0.03, dtype=torch.float64,
                             generator=torch.Generator().manual_seed(3))
    ref = dense.run(clip)
    chained = torch.cat([sparse.run(clip[:5]), torch.stack([sparse(f) for f in clip[5:9]]), sparse.run(clip[9:])])
    _assert_matches(chained, ref, torch.float64)
    sparse.reset()
    _assert_matches(sparse.run(clip), ref, torch.float64)


@pytest.mark.parametrize("policy", ["sparse", "dense"])
def test_inference_mode_on_and_off(policy):
    """A stream may go in and out of ``torch.inference_mode``: the engine's state stays writable."""
    dense, sparse, shape = _nets("residual", torch.float64)
    engine_of(sparse).set_dense_above(**POLICIES[policy])
    clip = correlated_stream(9, shape, step_std=0.03, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    ref = dense.run(clip)
    with torch.inference_mode():
        first = sparse.run(clip[:3])
    middle = sparse.run(clip[3:6])
    with torch.inference_mode():
        last = sparse.run(clip[6:])
    _assert_matches(torch.cat([first, middle, last]), ref, torch.float64)


def test_thresholds_may_change_mid_stream():
    dense, sparse, shape = _nets("residual", torch.float64)
    clip = correlated_stream(12, shape, step_std=0.03, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    ref = dense.run(clip)
    outs = []
    for i, policy in enumerate([ALL_DENSE, ALL_SPARSE, ALL_DENSE, ALL_SPARSE]):
        engine_of(sparse).set_dense_above(**policy)
        outs.append(sparse.run(clip[3 * i: 3 * i + 3]))
    _assert_matches(torch.cat(outs), ref, torch.float64)


def test_op_counts_match_the_dense_path():
    dense, sparse, shape = _nets("residual", torch.float64)
    clip = correlated_stream(10, shape, step_std=0.03, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    dense.run(clip)
    sparse.run(clip)
    expected, got = dense.op_counts(), sparse.op_counts()
    assert got.steps == expected.steps == 10
    for kind in expected.kinds:
        for layer, ops in expected.per_layer(kind).items():
            assert got.per_layer(kind)[layer] == pytest.approx(ops, rel=1e-12, abs=1e-9), (kind, layer)


def test_counting_off_leaves_counts_empty_and_output_unchanged():
    dense, sparse, shape = _nets("mlp", torch.float64)
    clip = correlated_stream(6, shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    sparse.counting = False
    _assert_matches(sparse.run(clip), dense.run(clip), torch.float64)
    assert sparse.op_counts().steps == 0


def test_scale_changes_are_picked_up():
    dense, sparse, shape = _nets("vgg", torch.float64)
    clip = correlated_stream(6, shape, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    sparse.run(clip)  # builds the plan with the old scales
    new = {name: 3.0 for name in dense.scales}
    for net in (dense, sparse):
        net.set_scales(new)
        net.reset()
    _assert_matches(sparse.run(clip), dense.run(clip), torch.float64)


def test_a_quiet_stream_does_no_work():
    dense, sparse, shape = _nets("residual", torch.float64)
    clip = correlated_stream(1, shape, dtype=torch.float64).expand(6, *([-1] * (len(shape) + 1))).clone()
    _assert_matches(sparse.run(clip), dense.run(clip), torch.float64)
    assert all(p == {"sparse": 0, "dense": 1, "idle": 5} for p in engine_of(sparse).paths().values())


def test_first_frame_of_a_backend_switch_restarts_the_stream():
    dense, sparse, shape = _nets("mlp", torch.float64)
    clip = correlated_stream(8, shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    sparse.set_backend("dense")
    sparse.run(clip[:3])
    sparse.set_backend("sparse")  # resets: a new stream
    _assert_matches(sparse.run(clip), dense.run(clip), torch.float64)


@pytest.mark.parametrize("stride, padding, dilation, kernel", [(1, 1, 1, 3), (2, 0, 1, 3), (2, 2, 2, 3), (1, 0, 1, 1),
                                                               (3, 1, 1, 5)])
def test_conv_targets_reach_exactly_the_fanout(stride, padding, dilation, kernel):
    """Each input row reaches as many output rows as the exact fan-out says, and its taps find exactly the
    outputs that a one-hot input changes."""
    layer = SigmaDeltaLinear("c", "conv2d", torch.randn(2, 1, kernel, kernel), None,
                                                dict(stride=stride, padding=padding, dilation=dilation, groups=1))
    size = (7, 9)
    out_size = layer.linear(torch.zeros(1, 1, *size), layer.weight).shape[2:]
    targets = conv_targets(size, out_size, (kernel,) * 2, (stride,) * 2, (padding,) * 2, (dilation,) * 2, batch=2)
    trash = 2 * out_size[0] * out_size[1]
    fanout = fanout_map(layer, (1, *size))[0].reshape(-1)  # per input pixel: C_out · reached outputs
    assert torch.equal((targets[: size[0] * size[1]] != trash).sum(1), (fanout / 2).long())
    ones = torch.ones(1, 1, kernel, kernel, dtype=torch.float64)
    for p in range(size[0] * size[1]):
        x = torch.zeros(1, 1, *size, dtype=torch.float64)
        x.view(-1)[p] = 1
        reached = F.conv2d(x, ones, stride=stride, padding=padding, dilation=dilation).reshape(-1).nonzero()
        mine = targets[p][targets[p] != trash].sort().values
        assert torch.equal(mine, reached.squeeze(1))
        assert torch.equal(targets[size[0] * size[1] + p][targets[p] != trash].sort().values,
                           mine + out_size[0] * out_size[1])  # stream 1: offset by one stream's outputs


def test_memory_within_twice_the_weights_for_an_mlp():
    dense, sparse, shape = _nets("mlp", torch.float32)
    sparse.run(correlated_stream(3, shape))
    mem = engine_of(sparse).memory()
    assert mem["state_bytes"] + mem["plan_bytes"] <= 2 * mem["weight_bytes"]


def test_benchmark_reports_every_field():
    from sigmadelta.eval.timing import benchmark

    torch.manual_seed(0)
    result = benchmark(mlp((32, 64, 10)), correlated_stream(8, (32,)), threads=1, repeats=2, scales=8.0)
    for key in ("model", "data", "frames", "threads", "dense_ms_per_frame", "sigma_delta_ms_per_frame", "speedup",
                "op_reduction", "max_abs_diff", "profile", "memory"):
        assert key in result
    assert result["frames"] == 7 and result["threads"] == 1
    assert result["rel_max_abs_diff"] <= 1e-4
    assert result["op_reduction"] > 0 and result["speedup"] > 0


@pytest.mark.slow
def test_efficientnet_lite0_matches_the_simulation():
    """EfficientNet-Lite0 in float64: padding, depthwise and strided convolutions, residual adds, the pooled head.

    (In float32 the backend cannot match the simulation to float32 precision on a network this deep: the
    simulation forms its products in float64, the backend in float32, and the rare integer that rounds the other
    way at a half-integer threshold is amplified through 50 layers. ``benchmarks/`` reports those differences.)
    """
    models = pytest.importorskip("sigmadelta.models")
    try:
        bundle = models.get("efficientnet-lite0", progress=False)
    except Exception as e:  # the packages with the architecture and weights are optional
        pytest.skip(f"EfficientNet-Lite0 is not available: {type(e).__name__}: {e}")
    example = bundle.example_input().double()
    try:
        net = sigmadelta.convert(bundle.model.double(), example)
    except sigmadelta.ConversionError as e:
        pytest.skip(f"EfficientNet-Lite0 does not convert yet (core rewrite): {e}")
    net.set_scales({name: 8.0 for name in net.scales})
    net.set_mode("sigma-delta")
    clip = correlated_stream(3, bundle.input_shape, step_std=0.01, low=-1.0, dtype=torch.float64,
                             generator=torch.Generator().manual_seed(8))
    clip[1:] = clip[:1]  # a still scene with one small moving patch: the sparse paths run
    clip[2, :, :, 100:116, 60:80] += 0.2
    ref = net.run(clip)
    net.set_backend("sparse")
    _assert_matches(net.run(clip), ref, torch.float64)
    assert sum(p["sparse"] for p in engine_of(net).paths().values()) > 0
