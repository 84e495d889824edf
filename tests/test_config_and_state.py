"""The configs (ScaleConfig, SchemeConfig, FinetuneConfig), net.configured(), observations(), the evaluation core."""

from __future__ import annotations

import pytest
import torch

import sigmadelta
from sigmadelta.config import ConfigError, FinetuneConfig, ScaleConfig, SchemeConfig
from sigmadelta.eval.stream import run_stream
from sigmadelta.recipes import PAPER_VIDEO
from sigmadelta.testing import correlated_stream, decision_margin, mlp


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


@pytest.mark.parametrize("cls, bad, field", [
    (SchemeConfig, dict(name="deltas"), "name"), (SchemeConfig, dict(name="hysteresis", param=-1.0), "param"),
    (SchemeConfig, dict(name="sigma-delta", param=1.0), "param"),
    (SchemeConfig, dict(name="sigma-delta", allocate_bands=True), "allocate_bands"),
    (SchemeConfig, dict(name="threshold", values={"0": "x"}), "values"),
    (FinetuneConfig, dict(window=1), "window"), (FinetuneConfig, dict(error="kl"), "error"),
    (FinetuneConfig, dict(surrogate="ops"), "surrogate"),
    (FinetuneConfig, dict(scheme=SchemeConfig("threshold", 0.1)), "scheme"),
])
def test_every_config_refuses_a_bad_field_by_name_and_round_trips(cls, bad, field):
    with pytest.raises(ConfigError, match=f"{cls.__name__}: {field} must be"):
        cls(**bad)
    good = cls().replace(**({"name": "hysteresis", "param": 1.5, "allocate_bands": True} if cls is SchemeConfig
                            else {"scheme": SchemeConfig("hysteresis", 1.0), "steps": 7}))
    assert cls.from_dict(good.to_dict()) == good
    with pytest.raises(ConfigError, match="unknown settings"):
        cls.from_dict(good.to_dict() | {"nope": 1})


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
        with net.configured(mode="sigma-delta", counting=True, backend="events", noise="uniform"):
            assert (net.mode, net.counting, net.backend) == ("sigma-delta", True, "events")
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
    assert torch.equal(first.x, clip.flatten(0, 1))  # the input itself, no arithmetic: exact by construction
    assert torch.equal(first.s.cumsum(0), first.r)  # integers (exact in float): Σ messages = round(k x), telescoping


def test_run_stream_equals_running_each_network_by_hand():
    """Chunks of 4 steps against one call of 11: another batch shape, so floats agree to rounding (float64,
    1e-12) and the integers (op counts) exactly, the levels being far from every decision (the margin asserted)."""
    torch.manual_seed(0)
    net = sigmadelta.convert(mlp((6, 8, 3)).double(), torch.zeros(1, 6, dtype=torch.float64))
    net.set_scales({name: 8.0 for name in net.scales})
    clip = correlated_stream(11, (6,), step_std=0.05, dtype=torch.float64)
    seen = {}
    counts = run_stream(net, clip, ("original", "rounding", "sigma-delta"), chunk=4,
                        on_chunk=lambda c, out, nets: [seen.setdefault(m, []).append(o) for m, o in out.items()])
    assert net.mode == "original"  # restored
    for mode in ("original", "rounding", "sigma-delta"):
        net.set_mode(mode)
        by_hand = net.run(clip)
        assert decision_margin(net) > 1e-9, mode
        torch.testing.assert_close(torch.cat(seen[mode]), by_hand, rtol=1e-12, atol=1e-12, msg=mode)
        assert counts[mode].to_dict() == net.op_counts().to_dict(), mode
    with pytest.raises(ValueError, match="unknown modes"):
        run_stream(net, clip, ("sigma_delta",))
    with pytest.raises(ValueError, match="no frame"):
        run_stream(net, iter([]), ("sigma-delta",))
