"""The exact guarantees of the four networks (paper-notes, sections 3-4).

Tolerances, by kind:
- float64 equivalent paths (temporal-difference vs original, sigma-delta vs rounding, clip vs streaming):
  max abs diff <= 1e-9;
- quantized integers (running sum of sigma-delta integers vs the rounding network's): exactly equal;
- lossy (rounding with k = 1e6 vs original): relative error <= 1e-4.
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sigmadelta
from sigmadelta.testing import correlated_stream, decision_margin, mlp, residual_cnn, vgg_style_cnn

F64 = torch.float64


def make(family: str, seed: int, width: int):
    torch.manual_seed(seed)
    if family == "mlp":
        return mlp((12, width, width, 5)).double(), (12,)
    if family == "vgg":
        return vgg_style_cnn(3, (width, width), size=8).double(), (3, 8, 8)
    return residual_cnn(channels=width, blocks=2).double(), (3, 8, 8)


def convert(model, shape):
    return sigmadelta.convert(model, torch.zeros(1, *shape, dtype=F64))


families = st.sampled_from(["mlp", "vgg", "residual"])


def stream_outputs(net, clip, mode):
    net.set_mode(mode)
    return torch.stack([net(frame) for frame in clip])


# ---------------------------------------------------------------------------------------------------------


def test_temporal_difference_equals_original_over_1000_steps():
    model, shape = make("residual", 0, 6)
    net = convert(model, shape)
    clip = correlated_stream(1000, shape, batch=2, dtype=F64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(clip.flatten(0, 1)).unflatten(0, (1000, 2))
        net.set_mode("temporal-difference")
        got = torch.stack([net(frame) for frame in clip])
    assert (got - expected).abs().max().item() <= 1e-9


def test_sigma_delta_equals_rounding_over_10000_steps():
    """Streams the paper's 784-200-200-10 MLP for 10,000 steps, one step at a time, with non-unit scales."""
    torch.manual_seed(0)
    model = mlp((784, 200, 200, 10)).double()
    sd, rnd = convert(model, (784,)), convert(model, (784,))
    scales = {name: k for name, k in zip(sd.scales, (5.0, 3.0, 2.0))}
    sd.set_scales(scales)
    rnd.set_scales(scales)
    sd.set_mode("sigma-delta")
    rnd.set_mode("rounding")
    sd.counting = rnd.counting = False
    clip = correlated_stream(10_000, (784,), dtype=F64, step_std=0.02, generator=torch.Generator().manual_seed(2))
    integer_sums = {name: torch.zeros(1, 784 if i == 0 else 200, dtype=F64) for i, name in enumerate(sd.quantizers)}
    worst = 0.0
    with torch.no_grad():
        for t, frame in enumerate(clip):
            a, b = sd(frame), rnd(frame)
            worst = max(worst, (a - b).abs().max().item())
            # two computations of each layer's input (running sums against a direct pass) differ by ~1e-12: the
            # integers agree exactly while every k·x stays farther than that from a half-integer (asserted, not hoped)
            assert decision_margin(rnd) > 1e-9, f"step {t}: a unit within 1e-9 of a rounding boundary"
            assert a.argmax(-1).item() == b.argmax(-1).item(), f"argmax differs at step {t}"
            for name, q in sd.quantizers.items():
                integer_sums[name] += q.observation.s
                # the running sum of emitted integers is exactly round(k x) of the rounding network
                assert torch.equal(integer_sums[name], rnd.quantizers[name].observation.r), (name, t)
    assert worst <= 1e-9


def test_huge_scale_rounding_reproduces_original():
    model, shape = make("vgg", 3, 4)
    net = convert(model, shape)
    net.set_scales({name: 1e6 for name in net.scales})
    net.set_mode("rounding")
    x = torch.rand(4, *shape, dtype=F64)
    with torch.no_grad():
        expected, got = model(x), net(x)
    assert ((got - expected).norm() / expected.norm()).item() <= 1e-4


def test_float32_sigma_delta_does_not_drift_over_5000_steps():
    """Float32 increments, float64 running sums: one layer (no rounding flips upstream), clips of 16 steps."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 32).eval()
    sd, rnd = (sigmadelta.convert(layer, torch.zeros(1, 64)) for _ in range(2))
    sd.set_delta_dtype(torch.float32)
    for net, mode in ((sd, "sigma-delta"), (rnd, "rounding")):
        net.set_scales({name: 8.0 for name in net.scales})
        net.set_mode(mode)
    clip = correlated_stream(5000, (64,), step_std=0.05, generator=torch.Generator().manual_seed(3))  # float32
    with torch.no_grad():
        got = torch.cat([sd.run(clip[i:i + 16]) for i in range(0, 5000, 16)])
        expected = rnd.run(clip)
    scale = expected.abs().max().item()
    # float32 noise only (~1e-7 relative per increment, a random walk over 5000 steps); drift would grow ~ T
    assert (got - expected).abs().max().item() <= 1e-5 * scale
    assert all(lin.total.dtype == F64 for lin in sd.layers.values())


def test_float32_increments_for_a_float32_model():
    model, shape = make("vgg", 1, 4)
    model = model.float()
    net = sigmadelta.convert(model, torch.zeros(1, *shape))
    net.set_scales({name: 4.0 for name in net.scales})
    clip = correlated_stream(12, shape, batch=2, generator=torch.Generator().manual_seed(4))
    assert net.delta_dtype == F64  # the default
    with torch.no_grad():
        net.set_mode("sigma-delta")
        exact = net.run(clip)
        assert net.quantizers[next(iter(net.quantizers))].observation.s.dtype == F64
        net.run(clip[:1])
        assert net.set_delta_dtype(torch.float32) is net and net.op_counts().steps == 0  # resets: state is float64
        fast = net.run(clip)
        assert net.quantizers[next(iter(net.quantizers))].observation.s.dtype == torch.float32
        assert exact.dtype == fast.dtype == torch.float32
        torch.testing.assert_close(fast, exact, rtol=1e-4, atol=1e-4)
        net.set_delta_dtype(F64)
        assert torch.equal(net.run(clip), exact)
    for bad in (torch.float16, torch.int64, "float64", None):
        with pytest.raises(ValueError, match="delta dtype"):
            net.set_delta_dtype(bad)
    assert net.delta_dtype == F64


def test_original_mode_matches_model_in_float32():
    model, shape = make("residual", 4, 8)
    model = model.float()
    net = sigmadelta.convert(model, torch.zeros(1, *shape))
    x = torch.rand(3, *shape)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-4, atol=1e-5)  # BatchNorm folded: float32 paths


def test_first_step_costs_what_the_rounding_network_costs():
    model, shape = make("vgg", 5, 4)
    net = convert(model, shape)
    x = torch.rand(2, *shape, dtype=F64)
    net.set_mode("sigma-delta")
    net(x)
    counts = net.op_counts()
    assert counts.total("sigma_delta") == counts.total("rounding") > 0
    net.set_mode("rounding")
    net(x)
    assert net.op_counts().total("rounding") == counts.total("sigma_delta")


def test_sigma_delta_costs_less_on_a_slow_stream():
    model, shape = make("mlp", 6, 32)
    net = convert(model, shape)
    net.set_scales({n: 20.0 for n in net.scales})
    net.set_mode("sigma-delta")
    net.run(correlated_stream(50, shape, step_std=0.01, dtype=F64))
    counts = net.op_counts()
    assert counts.total("sigma_delta") < 0.3 * counts.total("rounding")


# ---------------------------------------------------------------------------------------------------------
# property tests over random models, inputs and scales


@given(family=families, seed=st.integers(0, 2**16), width=st.integers(2, 8),
       log_scales=st.lists(st.floats(-2.0, 4.0), min_size=8, max_size=8),
       steps=st.integers(1, 12), batch=st.integers(1, 3), step_std=st.sampled_from([0.0, 0.01, 0.3]))
def test_properties(family, seed, width, log_scales, steps, batch, step_std):
    model, shape = make(family, seed, width)
    net = convert(model, shape)
    net.set_scales({name: float(torch.tensor(ls).exp()) for name, ls in zip(net.scales, log_scales)})
    clip = correlated_stream(steps, shape, batch=batch, step_std=step_std, dtype=F64,
                             generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out = {mode: stream_outputs(net, clip, mode) for mode in sigmadelta.MODES}
        expected = model(clip.flatten(0, 1)).unflatten(0, (steps, batch))
        assert (out["original"] - expected).abs().max().item() <= 1e-9
        assert (out["temporal-difference"] - out["original"]).abs().max().item() <= 1e-9
        assert (out["sigma-delta"] - out["rounding"]).abs().max().item() <= 1e-9
        # clip mode = streaming, in every mode, also when the clip is cut in two
        for mode in sigmadelta.MODES:
            net.set_mode(mode)
            cut = steps // 2
            parts = [net.run(clip[:cut])] if cut else []
            whole = torch.cat(parts + [net.run(clip[cut:])])
            assert (whole - out[mode]).abs().max().item() <= 1e-9, mode


@given(family=families, seed=st.integers(0, 2**16), steps=st.integers(1, 6))
def test_op_counts_clip_equal_streaming(family, seed, steps):
    model, shape = make(family, seed, 4)
    net = convert(model, shape)
    clip = correlated_stream(steps, shape, batch=2, dtype=F64, generator=torch.Generator().manual_seed(seed))
    net.set_mode("sigma-delta")
    with torch.no_grad():
        for frame in clip:
            net(frame)
        streamed = net.op_counts()
        net.reset()
        net.run(clip)
        clipped = net.op_counts()
    for kind in streamed.kinds:
        assert streamed.per_layer(kind) == clipped.per_layer(kind), kind
