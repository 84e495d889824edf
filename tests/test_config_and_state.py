"""ScaleConfig, net.configured(), observations(), the evaluation core, and the deprecated names."""

from __future__ import annotations

import warnings

import pytest
import torch

import sigmadelta
from sigmadelta.config import PAPER_VIDEO, ConfigError, ScaleConfig
from sigmadelta.eval.stream import run_stream
from sigmadelta.testing import correlated_stream, mlp


@pytest.fixture
def net():
    torch.manual_seed(0)
    n = sigmadelta.convert(mlp((6, 8, 3)), torch.zeros(1, 6))
    n.set_scales({name: 8.0 for name in n.scales})
    return n


def test_scale_config_validates_and_round_trips():
    config = PAPER_VIDEO.replace(lam=1e-10, epochs=2)
    assert ScaleConfig.from_dict(config.to_dict()) == config
    for bad, field in ((dict(lam=-1.0), "lam"), (dict(epochs=-1), "epochs"), (dict(noise="gauss"), "noise"),
                       (dict(init_scale=0.0), "init_scale"), (dict(eval_every=0), "eval_every")):
        with pytest.raises(ConfigError, match=f"{field} must be"):
            ScaleConfig(**bad)
    with pytest.raises(ConfigError, match="unknown settings"):
        config.replace(momentum=0.9)
    with pytest.raises(ConfigError, match="unknown settings"):
        ScaleConfig.from_dict({"lr": 0.1, "learning_rate": 0.1})


def test_the_config_of_a_run_is_kept_in_its_history(net):
    x = torch.randn(20, 6)
    h = sigmadelta.optimize_scales(net, x, 1e-4, config=ScaleConfig(error="l2", lr=0.01, epochs=1), progress=False)
    assert h.config == ScaleConfig(error="l2", lr=0.01, epochs=1, lam=1e-4).to_dict()
    with pytest.raises(ConfigError, match="needs λ"):
        sigmadelta.optimize_scales(net, x, config=ScaleConfig(error="l2"), progress=False)


def test_configured_restores_every_setting_also_on_error(net):
    net.set_mode("rounding")
    net.counting = False
    with pytest.raises(RuntimeError, match="inside"):
        with net.configured(mode="sigma-delta", counting=True, backend="sparse", noise="uniform"):
            assert (net.mode, net.counting, net.backend) == ("sigma-delta", True, "sparse")
            assert all(q.noise == "uniform" for q in net.quantizers.values())
            raise RuntimeError("inside")
    assert (net.mode, net.counting, net.backend) == ("rounding", False, "dense")
    assert all(q.noise == "round" for q in net.quantizers.values())
    with pytest.raises(ValueError, match="unknown noise"):
        with net.configured(noise="gauss"):
            pass


def test_observations_say_what_each_quantizer_saw_and_sent(net):
    with pytest.raises(RuntimeError, match="run the network first"):
        net.observations()
    clip = correlated_stream(5, (6,), step_std=0.1)
    for mode, has_r, has_s in (("original", False, False), ("rounding", True, False), ("sigma-delta", True, True)):
        net.set_mode(mode).run(clip)
        for name, seen in net.observations().items():
            assert seen.x.shape == (5, *net.quantizers[name].observation.x.shape[1:])
            assert (seen.r is not None, seen.s is not None) == (has_r, has_s), (mode, name)
    first = next(iter(net.observations().values()))
    torch.testing.assert_close(first.x, clip.flatten(0, 1), rtol=0, atol=0)  # the input layer sees the input
    assert torch.equal(first.s.cumsum(0), first.r)  # Σ messages = round(k x): the sigma-delta integers telescope


def test_run_stream_equals_running_each_network_by_hand(net):
    clip = correlated_stream(11, (6,), step_std=0.05)
    seen = {}
    counts = run_stream(net, clip, ("original", "rounding", "sigma-delta"), chunk=4,
                        on_chunk=lambda c, out, nets: [seen.setdefault(m, []).append(o) for m, o in out.items()])
    assert net.mode == "original"  # restored
    for mode in ("original", "rounding", "sigma-delta"):
        net.set_mode(mode)
        by_hand = net.run(clip)
        assert torch.equal(torch.cat(seen[mode]), by_hand), mode
        assert counts[mode].to_dict() == net.op_counts().to_dict(), mode
    with pytest.raises(ValueError, match="unknown modes"):
        run_stream(net, clip, ("sigma_delta",))
    with pytest.raises(ValueError, match="no frame"):
        run_stream(net, iter([]), ("sigma-delta",))


def test_old_names_warn_and_still_work():
    with pytest.warns(DeprecationWarning, match="sigmadelta.evaluation"):
        video = sigmadelta.video
    assert video.evaluate_stream is sigmadelta.evaluation.evaluate_stream
    from sigmadelta.files import scales

    with pytest.warns(DeprecationWarning, match="PAPER_VIDEO"):
        old = scales.CALIBRATION_DEFAULTS
    assert old["lr"] == PAPER_VIDEO.lr and old["error"] == PAPER_VIDEO.error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sigmadelta.optimize_scales(sigmadelta.convert(mlp((6, 8, 3)), torch.zeros(1, 6)), torch.randn(10, 6), 1e-4,
                                   error="l2", lr=0.01, epochs=1, progress=False)  # keywords: no warning
