"""Delta schemes (paper's Sigma-Delta, hysteresis, thresholded deltas): ``python -m pytest tests/core/test_schemes.py``.

Exact paths compare exactly (h = 0 against the paper's scheme: the same levels, then the same operations); clip
against streaming in float64 to 1e-12 with the integers exact, the levels asserted far from every decision; the
event engine against the dense simulation in float64 to 1e-9; the lossy schemes assert their error bounds.
"""

import pytest
import torch

import sigmadelta
from sigmadelta.core import functional as Fn
from sigmadelta.testing import correlated_stream, decision_margin, mlp, residual_cnn


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cnn_net(scale=8.0):
    torch.manual_seed(0)
    net = sigmadelta.convert(residual_cnn().double(), torch.zeros(1, 3, 16, 16, dtype=torch.float64))
    net.set_scales({name: scale for name in net.scales})
    net.per_step_counts = "total"  # the tests compare counts step by step
    return net.set_mode("sigma-delta")


def _stream(steps=10, batch=1, step_std=0.02, seed=1):
    torch.manual_seed(seed)
    return correlated_stream(steps, (3, 16, 16), batch=batch, step_std=step_std).double()


# h 0.37: the band 0.87 is never the distance of two values that clamps make exact (ReLU6's 6, the input's 0 and 1,
# times k = 8: integers), so every decision tested is away from a tie (test_clip_equals_streaming asserts the margin)
SCHEMES = [("hysteresis", dict(h=0.37)), ("threshold", dict(theta=0.05))]


# ---------------------------------------------------------------------------------------------------------
# the recurrences


def test_hysteresis_h0_is_rounding_bit_for_bit():
    torch.manual_seed(0)
    v = torch.randn(50, 7, 9) * 6
    v[3, 0, :4] = torch.tensor([0.5, 1.5, -2.5, 2.5])  # ties, where half-to-even matters
    levels, _ = Fn.encode_levels("hysteresis", v, torch.zeros(7, 9), 0.0)
    assert torch.equal(levels, torch.round(v))


@pytest.mark.parametrize("h", [0.25, 0.5, 1.5])
def test_hysteresis_bound_and_memory(h):
    torch.manual_seed(1)
    v = torch.cumsum(torch.randn(200, 64) * 0.3, 0) * 4
    levels, last = Fn.encode_levels("hysteresis", v, torch.zeros(64), h)
    assert torch.equal(levels, torch.round(levels))  # integer levels
    assert (v - levels).abs().max() <= 0.5 + h
    assert torch.equal(last, levels[-1])
    moved = levels[1:] != levels[:-1]
    assert ((v[1:] - levels[:-1]).abs()[moved] >= 0.5 + h).all()  # moves only past the band
    assert moved.sum() < (torch.round(v[1:]) != torch.round(v[:-1])).sum()  # fewer changes than rounding


def test_threshold_reference_and_bound():
    torch.manual_seed(2)
    x = torch.cumsum(torch.randn(100, 32) * 0.1, 0)
    theta = 0.2
    ref, _ = Fn.encode_levels("threshold", x, torch.zeros(32), theta)
    assert (x - ref).abs().max() <= theta
    message = torch.diff(ref, dim=0)
    sent = message != 0
    assert torch.equal(message[sent], (x[1:] - ref[:-1])[sent])  # x - ref where it was sent
    assert ((x[1:] - ref[:-1]).abs()[~sent] <= theta).all()


def test_levels_are_idempotent():
    """What lets an engine skip units whose input did not change."""
    torch.manual_seed(3)
    v, last = torch.randn(1000) * 5, torch.round(torch.randn(1000) * 5)
    for scheme, p in (("hysteresis", 0.7), ("threshold", 0.3), ("sigma-delta", 0.0)):
        once = Fn.LEVEL_FUNCTIONS[scheme](v, last, p)
        assert torch.equal(Fn.LEVEL_FUNCTIONS[scheme](v, once, p), once), scheme


# ---------------------------------------------------------------------------------------------------------
# networks


def test_hysteresis_h0_network_equals_paper_network_exactly():
    frames = _stream()
    net = _cnn_net()
    paper = net.run(frames)
    paper_counts = net.op_counts()
    net.set_scheme("hysteresis", h=0.0)
    assert torch.equal(net.run(frames), paper)
    counts = net.op_counts()
    for kind in ("sigma_delta", "sigma_delta_muladd", "rounding"):
        assert counts.total(kind) == paper_counts.total(kind), kind


def test_hysteresis_input_error_per_unit_bounded():
    h, k = 0.5, 8.0
    net = _cnn_net(k).set_scheme("hysteresis", h=h)
    frames = _stream(steps=12)
    q = net.quantizers["stem"]
    integrated = torch.zeros(())
    for t in range(len(frames)):
        net(frames[t])
        integrated = integrated + q.observation.s / k  # Σ messages: what the layer has seen
        assert (integrated - q.observation.x).abs().max() <= (0.5 + h) / k + 1e-12


@pytest.mark.parametrize("scheme,params", SCHEMES)
def test_clip_equals_streaming(scheme, params):
    frames = _stream(steps=9, batch=2)
    net = _cnn_net().set_scheme(scheme, **params)
    net.run(frames)
    assert decision_margin(net) > 1e-9  # clips and steps sum in other orders: no level may sit that close to a turn
    net.reset()
    clip = torch.cat([net.run(frames[:4]), net.run(frames[4:])])
    clip_counts = net.op_counts().per_step("sigma_delta_muladd")
    net.reset()
    stream = torch.stack([net(f) for f in frames])
    torch.testing.assert_close(clip, stream, rtol=1e-12, atol=1e-12)
    assert (net.op_counts().per_step("sigma_delta_muladd") == clip_counts).all()


@pytest.mark.parametrize("policy", ["auto", "events"])
@pytest.mark.parametrize("scheme,params", SCHEMES + [("sigma-delta", {})])
def test_the_event_engine_matches_the_dense_reference(scheme, params, policy):
    frames = _stream(steps=10, step_std=0.01)
    net = _cnn_net().set_scheme(scheme, **params)
    dense = net.run(frames)
    assert decision_margin(net) > 1e-9  # the engine sums in another order: its integers equal only away from a turn
    dense_events = net.op_counts().total("sigma_delta_muladd")
    net.set_backend("events")
    net.engine.set_policy(policy)
    events = torch.cat([net.run(frames[:3]), net.run(frames[3:])])
    assert (events - dense).abs().max() <= 1e-9
    assert net.op_counts().total("sigma_delta_muladd") == dense_events


def test_the_event_engine_runs_a_fully_connected_threshold_network():
    torch.manual_seed(4)
    model = mlp((20, 30, 5)).double()
    net = sigmadelta.convert(model, torch.zeros(1, 20, dtype=torch.float64), scheme="threshold", theta=0.1)
    net.set_mode("sigma-delta")
    frames = torch.cumsum(torch.randn(15, 2, 20, dtype=torch.float64) * 0.05, 0)
    dense = net.run(frames)
    net.set_backend("events")
    net.engine.set_policy("events")
    assert (net.run(frames) - dense).abs().max() <= 1e-9


def test_event_accounting_is_nonzero_messages_times_fanout():
    net = _cnn_net().set_scheme("threshold", theta=0.05)
    frames = _stream(steps=5)
    net.run(frames)
    counts = net.op_counts()
    s = net.quantizers["stem"].observation.s  # (T, 3, 16, 16)
    fanout = sigmadelta.accounting.fanout_map(net.layers["stem"], tuple(s.shape[1:]))
    expected = 2 * ((s != 0).double() * fanout).sum()
    assert counts.total("sigma_delta_muladd") > 0
    assert counts.per_layer("sigma_delta_muladd")["stem"] == pytest.approx(float(expected), rel=1e-12)
    # real-valued messages: the additions convention counts them as multiply-adds too
    assert counts.total("sigma_delta") == counts.total("sigma_delta_muladd")
    assert counts.scheme == "threshold"


def test_hysteresis_sends_fewer_events_than_the_paper_on_a_noisy_static_scene():
    torch.manual_seed(5)
    still = torch.rand(1, 1, 3, 16, 16, dtype=torch.float64)
    frames = still + 0.01 * torch.randn(20, 1, 3, 16, 16, dtype=torch.float64)  # sensor noise only
    net = _cnn_net(16.0)
    net.run(frames)
    paper = net.op_counts().per_step("sigma_delta_muladd")[1:].sum()
    net.set_scheme("hysteresis", h=0.5)
    net.run(frames)
    assert net.op_counts().per_step("sigma_delta_muladd")[1:].sum() < 0.5 * paper


def test_threshold_from_tau_and_input_std():
    net = _cnn_net()
    frames = _stream(steps=6)
    stds = net.input_std(frames)
    net.set_scheme("threshold", tau=0.1, calibration=frames)
    assert net.scheme == "threshold"
    assert net.scheme_params == pytest.approx({n: 0.1 * s for n, s in stds.items()})
    assert net.mode == "sigma-delta"  # input_std does not touch the network it measures


def test_bad_scheme_input():
    net = _cnn_net()
    with pytest.raises(ValueError, match="unknown scheme 'banana'"):
        net.set_scheme("banana")
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        net.set_scheme("hysteresis", h=-1)
    with pytest.raises(ValueError, match="theta, or tau"):
        net.set_scheme("threshold")
    with pytest.raises(KeyError, match="missing"):
        net.set_scheme("hysteresis", h={"stem": 0.5})
    assert net.scheme == "sigma-delta"  # nothing changed


# ---------------------------------------------------------------------------------------------------------
# files and CLI


def test_scales_file_keeps_the_scheme_and_old_files_load(tmp_path):
    import json

    from sigmadelta.errors import ScalesError
    from sigmadelta.files import scales as sc

    net = _cnn_net(4.0).set_scheme("hysteresis", h={n: 0.25 * (i + 1) for i, n in enumerate(_cnn_net().scales)})
    path = sc.save_scales(tmp_path / "s.json", net, model="toy")
    fresh = _cnn_net(1.0)
    sc.apply_scales(fresh, path, model="toy")
    assert fresh.scheme == "hysteresis" and fresh.scheme_params == net.scheme_params
    assert fresh.scales == net.scales
    old = json.loads(path.read_text())
    del old["scheme"]  # a file written before schemes existed
    (tmp_path / "old.json").write_text(json.dumps(old))
    older = _cnn_net(1.0)
    sc.apply_scales(older, tmp_path / "old.json", model="toy")
    assert older.scheme == "sigma-delta" and older.scales == net.scales
    old["scheme"] = {"name": "banana"}
    (tmp_path / "bad.json").write_text(json.dumps(old))
    with pytest.raises(ScalesError, match="'scheme': SchemeConfig: name must be one of"):
        sc.read_scales_file(tmp_path / "bad.json")


def test_cli_scheme_options_parse_and_match_the_library():
    from sigmadelta.cli import parser

    assert parser.SCHEME_NAMES == Fn.SCHEMES
    for command in (["run", "v.mp4", "--model", "squeezenet1_1"], ["optimize", "--model", "squeezenet1_1",
                                                                    "--calibrate", "carphone", "-o", "s.json"],
                    ["bench", "--model", "squeezenet1_1", "--data", "bikes"]):
        args = parser.build_parser().parse_args(command + ["--scheme", "threshold", "--scheme-param", "0.1"])
        assert (args.scheme, args.scheme_param) == ("threshold", 0.1)
    with pytest.raises(SystemExit):
        parser.build_parser().parse_args(["run", "v.mp4", "--model", "squeezenet1_1", "--scheme", "banana"])


@pytest.mark.slow
def test_optimize_and_run_with_a_scheme_on_squeezenet(tmp_path, monkeypatch):
    import json

    from sigmadelta.cli import main
    from sigmadelta.data import clip_path

    monkeypatch.setenv("SIGMADELTA_CACHE", str(tmp_path / "cache"))
    scales = tmp_path / "s.json"
    assert main(["optimize", "--model", "squeezenet1_1", "--calibrate", "carphone", "--calibrate-frames", "2",
                 "--epochs", "1", "-o", str(scales), "--scheme", "threshold", "--scheme-param", "0.05"]) == 0
    saved = json.loads(scales.read_text())["scheme"]
    assert saved["name"] == "threshold" and saved["param"] == 0.05
    assert len(saved["values"]) == 18 and min(saved["values"].values()) > 0
    out = tmp_path / "r.json"
    assert main(["run", str(clip_path("bikes")), "--model", "squeezenet1_1", "--scales", str(scales),
                 "--frames", "4", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["summary"]["scheme"]["name"] == "threshold"
    frame = report["frames"][1]["ops"]
    assert {"original", "sigma_delta", "events"} <= set(frame)
    assert frame["events"] == frame["sigma_delta"]  # real-valued messages: additions are counted as events
    assert report["summary"]["reduction_events"] == pytest.approx(
        report["summary"]["ops_original_per_frame"] / report["summary"]["ops_sigma_delta_events_per_frame"])


# ---------------------------------------------------------------------------------------------------------
# the scheme's parameter learned per quantizer (sigmadelta.learn.scheme_search)


def _measured(net, frames, scheme, params, lam, cost_kind):
    """J of ``params`` measured afresh, outside the search: l2-softmax error per frame + λ · ops per frame."""
    net.set_scheme(scheme, **{"h" if scheme == "hysteresis" else "theta": params})
    with net.configured(mode="original"), torch.no_grad():
        target = net.run(frames)
    with net.configured(mode="sigma-delta", counting=True), torch.no_grad():
        net.reset()
        out = net.run(frames)
        ops = net.op_counts().total(cost_kind) / len(frames)
    err = float(((out.softmax(-1) - target.softmax(-1)) ** 2).sum(-1).mean())
    return err + lam * ops, err, ops


@pytest.mark.parametrize("scheme,candidates", [("hysteresis", (0.0, 0.5, 1.0, 2.0)),
                                               ("threshold", (0.0, 0.02, 0.05, 0.1))])
def test_learned_scheme_params_lower_the_measured_objective_and_cut_events(scheme, candidates):
    from sigmadelta.learn.scheme_search import learn_scheme_params

    net, frames, lam = _cnn_net(), _stream(steps=16, step_std=0.01), 1e-6
    search = learn_scheme_params(net, frames, lam, scheme=scheme, candidates=candidates, sweeps=2, progress=False)
    assert net.scheme == scheme and net.scheme_params == search.params
    start = _measured(net, frames, scheme, dict.fromkeys(search.params, 0.0), lam, "sigma_delta_muladd")
    found = _measured(net, frames, scheme, search.params, lam, "sigma_delta_muladd")
    assert found == pytest.approx((search.objective, search.error, search.ops), rel=1e-12)  # exact path, float64
    assert search.trace[0]["objective"] == pytest.approx(start[0], rel=1e-12)
    assert found[0] < start[0] and found[2] < start[2]  # the noise-driven messages cost more than they fix
    accepted = [row["objective"] for row in search.trace[1:] if row["objective"] < search.trace[0]["objective"]]
    assert min(accepted) == search.objective and set(search.params.values()) - {0.0}


def test_learned_scheme_params_refuse_bad_settings_before_touching_the_net():
    from sigmadelta.learn.scheme_search import learn_scheme_params

    net, frames = _cnn_net(), _stream(steps=4)
    before = net.scheme_params
    for kwargs, words in ((dict(scheme="sigma-delta"), "has no parameter"), (dict(convention="flops"), "unknown convention"),
                          (dict(candidates=(0.5, -1.0)), "candidates"), (dict(sweeps=0), "sweeps")):
        with pytest.raises(ValueError, match=words):
            learn_scheme_params(net, frames, 1e-6, progress=False, **kwargs)
    assert net.scheme == "sigma-delta" and net.scheme_params == before
