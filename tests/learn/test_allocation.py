"""Bands spread across layers by output sensitivity (``sigmadelta.allocate_bands``):
``python -m pytest tests/test_allocation.py -q``.

The statistics are compared with a hand computation on a two-layer MLP (float64, rel 1e-12); the allocation keeps
the predicted error exactly (rel 1e-12) and follows its rule; bad settings are refused before the net changes.
"""

import json

import pytest
import torch

import sigmadelta
from sigmadelta.learn.allocation import band_statistics
from sigmadelta.cli import main


def _mlp_net():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).double().eval()
    net = sigmadelta.convert(model, torch.zeros(1, 6, dtype=torch.float64))
    frames = torch.rand(1, 2, 6, dtype=torch.float64) + 0.05 * torch.randn(12, 2, 6, dtype=torch.float64).cumsum(0)
    return model, net, frames


def test_band_statistics_match_a_hand_computation():
    model, net, frames = _mlp_net()
    stats = band_statistics(net, frames, chunk=5)  # chunks of 5 frames: the drift crosses chunk boundaries
    x = frames.reshape(-1, 6).clone().requires_grad_(True)
    hidden = torch.relu(model[0](x))
    hidden.retain_grad()
    top = model[2](hidden).topk(2, dim=-1).values
    (top[:, 0] - top[:, 1]).sum().backward()
    for name, unit_input, grad, fanout in (("0", x, x.grad, 8.0), ("2", hidden, hidden.grad, 3.0)):
        series = unit_input.detach().reshape(12, 2, -1)
        assert stats[name]["g"] == pytest.approx(float(grad.square().mean()), rel=1e-12)
        assert stats[name]["a"] == pytest.approx(float((series[1:] - series[:-1]).abs().mean()), rel=1e-12)
        assert stats[name]["f"] == fanout and stats[name]["n"] == series.shape[-1]


def test_threshold_bands_keep_the_predicted_error_and_follow_the_rule():
    _, net, frames = _mlp_net()
    net.set_scheme("threshold", tau=0.1, calibration=frames)
    uniform = net.scheme_params
    allocation = sigmadelta.allocate_bands(net, frames)
    assert allocation.before == uniform and net.scheme_params == allocation.params == allocation.bands
    assert allocation.predicted_error(allocation.bands) == pytest.approx(allocation.predicted_error(uniform), rel=1e-12)
    rule = {name: (s["f"] * s["a"] / s["g"]) ** (1 / 3) for name, s in allocation.stats.items()}
    assert allocation.bands["0"] / allocation.bands["2"] == pytest.approx(rule["0"] / rule["2"], rel=1e-12)
    assert allocation.bands != uniform
    out = net.set_mode("sigma-delta").run(frames)
    assert out.shape == (12, 2, 3) and torch.isfinite(out).all()


def test_hysteresis_bands_become_h_per_quantizer():
    _, net, frames = _mlp_net()
    net.set_scales({"0": 20.0, "2": 5.0})
    net.set_scheme("hysteresis", h=1.0)
    allocation = sigmadelta.allocate_bands(net, frames)
    assert allocation.before == pytest.approx({"0": 1.5 / 20.0, "2": 1.5 / 5.0}, rel=1e-12)  # k = exp(log k)
    for name, band in allocation.bands.items():
        assert net.scheme_params[name] == pytest.approx(max(0.0, band * net.scales[name] - 0.5), rel=1e-12)
        assert net.scheme_params[name] >= 0


def test_allocation_refuses_bad_settings_before_touching_the_net():
    _, net, frames = _mlp_net()
    with pytest.raises(ValueError, match="has no band"):
        sigmadelta.allocate_bands(net, frames)  # the paper's scheme
    net.set_scheme("threshold", theta=0.1)
    for bad, kwargs, match in ((frames[:1], {}, "T >= 2"), (frames, dict(exponent=0.0), "exponent"),
                               (frames[:, :, :3], {}, "shape")):
        with pytest.raises((ValueError, sigmadelta.StreamError), match=match):
            sigmadelta.allocate_bands(net, bad, **kwargs)
        assert net.scheme_params == {"0": 0.1, "2": 0.1}
    still = torch.ones(4, 1, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="no change"):
        sigmadelta.allocate_bands(net, still)


def test_cli_allocates_bands_and_refuses_them_without_a_band(tmp_path, capsys):
    assert main(["run", "v.mp4", "--model", "squeezenet1_1", "--allocate-bands"]) == 2
    assert "--allocate-bands" in capsys.readouterr().err
    params = {}
    for extra in ([], ["--allocate-bands"]):
        out = tmp_path / f"bench{len(extra)}.json"
        assert main(["bench", "--model", "mnist-mlp", "--data", "temporal-mnist", "--frames", "6", "--repeats", "1",
                     "--scheme", "threshold", "--scheme-param", "0.1", "--json", str(out)] + extra) == 0
        params[bool(extra)] = json.loads(out.read_text())["scheme"]["values"]
    assert params[True].keys() == params[False].keys() and params[True] != params[False]
