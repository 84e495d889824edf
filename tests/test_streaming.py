"""Streaming semantics: state, reset, and bad input that is refused without touching state."""

import pytest
import torch

import sigmadelta
from sigmadelta import StreamError
from sigmadelta.testing import correlated_stream, vgg_style_cnn

SHAPE = (3, 8, 8)


@pytest.fixture
def net():
    torch.manual_seed(0)
    n = sigmadelta.convert(vgg_style_cnn(3, (4, 4), size=8).double(), torch.zeros(1, *SHAPE, dtype=torch.float64))
    n.set_scales({k: 4.0 for k in n.scales})
    return n.set_mode("sigma-delta")


def test_batch_holds_independent_streams(net):
    clip = correlated_stream(6, SHAPE, batch=3, dtype=torch.float64)
    together = net.run(clip)
    for b in range(3):
        net.reset()
        alone = net.run(clip[:, b:b + 1])
        assert (alone[:, 0] - together[:, b]).abs().max().item() <= 1e-9


def test_reset_returns_to_the_start_of_a_stream(net):
    clip = correlated_stream(4, SHAPE, dtype=torch.float64)
    first = net.run(clip)
    net.reset()
    assert torch.equal(net.run(clip), first)


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(2, 3, 8, 7, dtype=torch.float64), r"shape \(2, 3, 8, 7\); expected \[B, 3, 8, 8\]"),
    (torch.zeros(2, 3, 8, 8, dtype=torch.float32), "dtype torch.float32"),
    (torch.zeros(2, 3, 8, 8, dtype=torch.float64).index_fill_(3, torch.tensor([5]), float("nan")), "NaN or inf"),
    (torch.full((2, 3, 8, 8), float("inf"), dtype=torch.float64), "NaN or inf"),
    (torch.zeros(3, 3, 8, 8, dtype=torch.float64), "has 3 streams but this stream has 2"),
    (torch.zeros(0, 3, 8, 8, dtype=torch.float64), "empty"),
    ([[0.0]], "must be a torch.Tensor"),
])
def test_bad_frames_are_refused_and_leave_state_untouched(net, bad, match):
    clip = correlated_stream(5, SHAPE, batch=2, dtype=torch.float64)
    reference = net.run(clip)
    counts = net.op_counts()
    net.reset()
    net(clip[0])
    net(clip[1])
    with pytest.raises(StreamError, match=match):
        net(bad)
    rest = torch.stack([net(frame) for frame in clip[2:]])
    assert (rest - reference[2:]).abs().max().item() <= 1e-9
    assert net.op_counts().per_layer("sigma_delta") == counts.per_layer("sigma_delta")


def test_bad_clip_shape(net):
    with pytest.raises(StreamError, match=r"expected \[T, B, 3, 8, 8\]"):
        net.run(torch.zeros(2, 3, 8, 8, dtype=torch.float64))


def test_failure_inside_the_graph_discards_staged_state(net):
    clip = correlated_stream(3, SHAPE, batch=1, dtype=torch.float64)
    reference = net.run(clip)
    net.reset()
    net(clip[0])
    layer = net.layers["11"]
    saved = layer.conv_args, layer.kind
    layer.kind = "conv2d"  # sabotage the last linear layer: the call fails after earlier layers staged state
    with pytest.raises(RuntimeError):
        net(clip[1])
    layer.kind = saved[1]
    rest = torch.stack([net(frame) for frame in clip[1:]])
    assert (rest - reference[1:]).abs().max().item() <= 1e-9


def test_batch_size_can_change_after_reset(net):
    net(torch.zeros(2, *SHAPE, dtype=torch.float64))
    net.reset()
    assert net(torch.zeros(5, *SHAPE, dtype=torch.float64)).shape == (5, 10)


def test_unknown_mode(net):
    with pytest.raises(ValueError, match="unknown mode 'delta'"):
        net.set_mode("delta")


def test_in_place_ops_downstream_do_not_touch_state():
    model = torch.nn.Sequential(torch.nn.Linear(6, 5, bias=False), torch.nn.ReLU(inplace=True),
                                torch.nn.Linear(5, 3, bias=False)).double().eval()
    net = sigmadelta.convert(model, torch.zeros(1, 6, dtype=torch.float64)).set_mode("temporal-difference")
    clip = correlated_stream(20, (6,), dtype=torch.float64, low=-1.0)
    with torch.no_grad():
        expected = model(clip.flatten(0, 1)).unflatten(0, (20, 1))
        got = torch.stack([net(frame) for frame in clip])
    assert (got - expected).abs().max().item() <= 1e-9


def test_counting_under_inference_mode(net):
    with torch.inference_mode():
        net.run(correlated_stream(3, SHAPE, dtype=torch.float64))
    assert net.op_counts().steps == 3


def test_set_scales_restarts_the_stream(net):
    net.run(correlated_stream(3, SHAPE, dtype=torch.float64))
    net.set_scales({next(iter(net.scales)): 2.0})
    assert net.op_counts().steps == 0


def test_the_finite_check_tells_an_overflowing_sum_from_nan_and_inf():
    """The input check sums in float64 first (one pass); finite values whose sum overflows still pass, NaN and inf
    anywhere do not."""
    net = sigmadelta.convert(torch.nn.Linear(3, 2).double().eval(), torch.zeros(1, 3, dtype=torch.float64))
    net(torch.full((1, 3), 1e308, dtype=torch.float64))  # the sum is inf; every value is finite
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.full((1, 3), 1e308, dtype=torch.float64)
        x[0, 2] = bad
        with pytest.raises(sigmadelta.StreamError, match=r"NaN or inf \(first at index \[0, 2\]\)"):
            net(x)
