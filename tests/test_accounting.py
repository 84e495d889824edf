"""Op and energy accounting (paper-notes, section 5): exact counts, checked against brute force."""

import itertools

import numpy as np

import pytest
import torch
from torch import nn

import sigmadelta
from sigmadelta.accounting import energy_per_op_pj
from sigmadelta.testing import correlated_stream, mlp


def test_paper_mlp_dense_ops_and_energy():
    net = sigmadelta.convert(mlp((784, 200, 200, 10)), torch.zeros(1, 784))
    net(torch.rand(3, 784))
    counts = net.op_counts()
    assert counts.per_sample("dense") == 397_190  # 313,400 + 79,800 + 3,990
    assert counts.per_layer("dense") == {"0": 313_400 * 3, "2": 79_800 * 3, "4": 3_990 * 3}
    # int32: half multiplies (3.1 pJ), half adds (0.1 pJ): 1.6 pJ per op → 635.5 nJ per sample
    assert counts.energy_nj("dense", per_sample=True) == pytest.approx(397_190 * 1.6e-3)
    assert energy_per_op_pj("sigma_delta", "int32") == 0.1
    assert energy_per_op_pj("dense", "fp32") == pytest.approx((0.9 + 3.7) / 2)


def test_sparse_and_quantized_counts_of_a_linear_layer_by_hand():
    layer = nn.Linear(4, 3)
    net = sigmadelta.convert(layer.eval(), torch.zeros(1, 4))
    net.per_step_counts = "layer"  # per-step counts are opt-in
    net.set_scales({next(iter(net.scales)): 2.0})
    net.set_mode("sigma-delta")
    frames = torch.tensor([[[0.0, 0.3, -1.0, 0.0]],  # k x = [0, 0.6, -2, 0] → r = [0, 1, -2, 0]
                           [[0.0, 0.3, 0.0, 0.0]]])  # r = [0, 1, 0, 0] → s = [0, 0, 2, 0]
    for frame in frames:
        net(frame)
    c = net.op_counts()
    with pytest.raises(KeyError, match="original or temporal-difference mode"):
        c.per_step("sparse")  # a quantized network's activations are not the original's
    net.set_mode("original").run(frames)
    assert net.op_counts().per_step("sparse").tolist() == [(2 * 2 - 1) * 3, (2 * 1 - 1) * 3]
    assert c.per_step("rounding").tolist() == [3 * 3, 1 * 3]
    assert c.per_step("rounding_muladd").tolist() == [2 * 2 * 3, 2 * 1 * 3]
    assert c.per_step("sigma_delta").tolist() == [3 * 3, 2 * 3]
    assert c.per_step("sigma_delta_muladd").tolist() == [2 * 2 * 3, 2 * 1 * 3]


def brute_force_fanout(conv: nn.Conv2d, in_shape):
    """Count, for each input unit, the (output unit, weight) pairs that read it, by walking every output."""
    c_in, h, w = in_shape
    fan = torch.zeros(in_shape, dtype=torch.float64)
    out = conv(torch.zeros(1, *in_shape))
    c_out, h_out, w_out = out.shape[1:]
    (sh, sw), (ph, pw), (dh, dw) = conv.stride, conv.padding, conv.dilation
    kh, kw = conv.kernel_size
    per_group_in, per_group_out = c_in // conv.groups, c_out // conv.groups
    for o, i, j in itertools.product(range(c_out), range(h_out), range(w_out)):
        g = o // per_group_out
        for ci, a, b in itertools.product(range(per_group_in), range(kh), range(kw)):
            y, x = i * sh - ph + a * dh, j * sw - pw + b * dw
            if 0 <= y < h and 0 <= x < w:
                fan[g * per_group_in + ci, y, x] += 1
    return fan


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=4, kernel_size=3, stride=2, padding=1, groups=4),  # depthwise, strided
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(1, 2), padding=(2, 0), dilation=2, groups=2),
    dict(in_channels=2, out_channels=2, kernel_size=5, padding=0),
])
def test_convolution_counts_equal_brute_force(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(**kwargs).eval()
    shape = (kwargs["in_channels"], 7, 6)
    net = sigmadelta.convert(conv, torch.zeros(1, *shape))
    net.per_step_counts = "layer"  # per-step counts are opt-in
    fan = brute_force_fanout(conv, shape)
    name = next(iter(net.scales))
    net.set_scales({name: 3.0})
    net.set_mode("sigma-delta")
    clip = torch.randn(3, 2, *shape)
    clip[:, :, 0] = 0  # some exact zeros for the sparse count
    net.run(clip)
    c = net.op_counts()
    r = torch.round(3.0 * clip.double())
    s = torch.diff(r, dim=0, prepend=torch.zeros_like(r[:1]))
    assert c.per_step("rounding").tolist() == (r.abs() * fan).sum((1, 2, 3, 4)).tolist()
    assert c.per_step("sigma_delta").tolist() == (s.abs() * fan).sum((1, 2, 3, 4)).tolist()
    net.set_mode("original").run(clip)
    sparse = net.op_counts().per_step("sparse")
    assert sparse.tolist() == (2 * (clip != 0).double() * fan).sum((1, 2, 3, 4)).tolist()
    out = conv(clip[0])
    macs = out[0].numel() * conv.weight[0].numel()
    assert c.per_step("dense").tolist() == [2.0 * macs * 2] * 3  # 2 ops per MAC, 2 streams


def test_counts_reset_and_per_layer_steps():
    net = sigmadelta.convert(mlp((8, 6, 2)), torch.zeros(1, 8))
    net.per_step_counts = "layer"  # per-step counts are opt-in
    net.set_mode("sigma-delta")
    net.run(correlated_stream(7, (8,), batch=3))
    c = net.op_counts()
    assert c.steps == 7 and c.batch_size == 3
    assert all(v.shape == (7,) for v in c.per_layer_step("sigma_delta").values())
    assert c.per_sample("dense") == (2 * 8 - 1) * 6 + (2 * 6 - 1) * 2
    with pytest.raises(KeyError, match="unknown op kind"):
        c.total("bogus")
    net.set_mode("rounding")
    net.run(correlated_stream(2, (8,)))
    with pytest.raises(KeyError, match="sigma-delta mode"):
        net.op_counts().total("sigma_delta")
    net.reset()
    assert net.op_counts().steps == 0


def test_hybrid_is_the_cheaper_of_sigma_delta_and_dense_per_layer_and_step():
    layer = nn.Linear(4, 3)
    net = sigmadelta.convert(layer.eval(), torch.zeros(1, 4))
    net.per_step_counts = "layer"  # per-step counts are opt-in
    net.set_scales({next(iter(net.scales)): 2.0})
    net.set_mode("sigma-delta")
    # step 0: r = [0, 1, -2, 0] → 3·3 = 9 additions < 21 dense ops; step 1: k x = [8, 8, 8, 8] → s = [8, 7, 10, 8]:
    # 33·3 = 99 additions > 21
    net.run(torch.tensor([[[0.0, 0.3, -1.0, 0.0]], [[4.0, 4.0, 4.0, 4.0]]]))
    c = net.op_counts()
    dense = (2 * 4 - 1) * 3
    assert c.per_step("sigma_delta").tolist() == [9, 99]
    assert c.per_step("sigma_delta_hybrid").tolist() == [9, dense]
    assert c.energy_nj("sigma_delta_hybrid") == pytest.approx((9 * 0.1 + dense * 1.6) / 1000)
    assert c.energy_nj("sigma_delta_hybrid", per_sample=True) == pytest.approx((9 * 0.1 + dense * 1.6) / 2000)
    with pytest.raises(ValueError, match="mixes additions"):
        energy_per_op_pj("sigma_delta_hybrid")


def _brute_force_step(net, batch):
    """One step's counts per layer and kind, from the quantizers' records by the definitions (FC layers)."""
    out = {}
    for name, layer in net.layers.items():
        q = net.quantizers[net.layer_inputs[name]]
        n_out, n_in = layer.weight.shape
        r, s = q.observation.r.double(), q.observation.s.double()
        dense = float(batch * (2 * n_in - 1) * n_out)
        sd = float(s.abs().sum() * n_out)
        out[name] = {"dense": dense, "rounding": float(r.abs().sum() * n_out),
                     "rounding_muladd": float(2 * (r != 0).sum() * n_out), "sigma_delta": sd,
                     "sigma_delta_muladd": float(2 * (s != 0).sum() * n_out), "sigma_delta_hybrid": min(sd, dense),
                     "hybrid_energy_pj": sd * 0.1 if sd <= dense else dense * 1.6}
    return out


def test_running_totals_equal_the_per_step_counts_of_a_long_stream():
    """Totals only (the default, bounded memory) give exactly the counts that per-step records sum to."""
    torch.manual_seed(0)
    model = mlp((6, 5, 3))
    nets = {}
    for per_step in (None, "total", "layer"):
        nets[per_step] = net = sigmadelta.convert(model, torch.zeros(1, 6))
        net.set_scales({name: 4.0 for name in net.scales})
        net.set_mode("sigma-delta")
        net.per_step_counts = per_step
    stream = correlated_stream(300, (6,), batch=2, step_std=0.2, generator=torch.Generator().manual_seed(1))
    reference = []
    for frame in stream:  # one step at a time, as a camera would
        for net in nets.values():
            net(frame)
        reference.append(_brute_force_step(nets[None], batch=2))
    layers = list(nets[None].layers)
    kinds = ("dense", "rounding", "rounding_muladd", "sigma_delta", "sigma_delta_muladd", "sigma_delta_hybrid")
    expected = {k: {l: np.array([step[l][k] for step in reference]) for l in layers} for k in kinds}
    sd, hybrid = (np.concatenate(list(expected[k].values())) for k in ("sigma_delta", "sigma_delta_hybrid"))
    assert (hybrid < sd).any() and (hybrid == sd).any()  # both paths taken
    hybrid_pj = sum(step[l]["hybrid_energy_pj"] for step in reference for l in layers)
    dicts = []
    for per_step, net in nets.items():
        c = net.op_counts()
        assert c.steps == 300 and c.batch_size == 2 and set(c.kinds) == set(kinds)
        for k in kinds:
            assert c.per_layer(k) == {l: float(v.sum()) for l, v in expected[k].items()}, (per_step, k)  # exact
            assert c.total(k) == sum(v.sum() for v in expected[k].values())
            assert c.per_sample(k) == c.total(k) / 600
        assert c.energy_nj("sigma_delta_hybrid") == pytest.approx(hybrid_pj / 1000, rel=1e-12)
        int8 = c.energy_nj("sigma_delta", "int8", per_sample=True)
        assert int8 == pytest.approx(c.per_sample("sigma_delta") * 0.03e-3)
        dicts.append(c.to_dict())
    assert dicts[0] == dicts[1] == dicts[2]
    c = nets["layer"].op_counts()
    for k in kinds:
        per_layer = {l: v.tolist() for l, v in c.per_layer_step(k).items()}
        assert per_layer == {l: v.tolist() for l, v in expected[k].items()}
        over_layers = sum(expected[k].values()).tolist()
        assert nets["total"].op_counts().per_step(k).tolist() == c.per_step(k).tolist() == over_layers
    with pytest.raises(ValueError, match="net.per_step_counts = 'total'"):
        nets[None].op_counts().per_step("sigma_delta")
    with pytest.raises(ValueError, match="summed over layers only"):
        nets["total"].op_counts().per_layer_step("sigma_delta")


def test_per_step_counts_asked_for_mid_stream_say_so_and_survive_reset():
    net = sigmadelta.convert(mlp((4, 3)), torch.zeros(1, 4))
    net(torch.rand(1, 4))
    net.per_step_counts = "total"
    net(torch.rand(1, 4))
    assert net.op_counts().steps == 2 and net.op_counts().total("dense") == 2 * 7 * 3
    with pytest.raises(ValueError, match="from step 1 only"):
        net.op_counts().per_step("dense")
    net.reset()
    net(torch.rand(1, 4))
    assert net.per_step_counts == "total" and net.op_counts().per_step("dense").tolist() == [21.0]
    with pytest.raises(ValueError, match="must be one of"):
        net.per_step_counts = "frames"
    assert net.per_step_counts == "total"
