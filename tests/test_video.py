"""Per-frame video evaluation, scales files and calibration, `sigmadelta run` / `optimize`, `reproduce video`.

    .venv/bin/python -m pytest -q tests/test_video.py            # all (the slow ones use EfficientNet-Lite0)
    .venv/bin/python -m pytest -q tests/test_video.py -m "not slow"

Fast tests use a small residual CNN and synthetic, temporally correlated frames; the slow ones run the real
pre-trained EfficientNet-Lite0 on a few frames of the bundled clips.
"""

import json
import math

import numpy as np
import pytest
import torch

import sigmadelta
from sigmadelta.files import scales as sc
from sigmadelta.eval import video as video
from sigmadelta.cli import main
from sigmadelta.testing import correlated_stream, residual_cnn


@pytest.fixture
def net():
    torch.manual_seed(0)
    net = sigmadelta.convert(residual_cnn(), torch.zeros(1, 3, 16, 16))
    net.set_scales({name: 8.0 for name in net.scales})
    return net


@pytest.fixture
def frames():
    return correlated_stream(10, (3, 16, 16), step_std=0.01, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    from sigmadelta import data

    monkeypatch.setenv(data.CLIPS_ENV, str(data.clips_dir()))  # the fetched clips stay where make install put them
    monkeypatch.setenv("SIGMADELTA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ---------------------------------------------------------------------------------------------------------
# sigmadelta.evaluation


def test_per_frame_counts_match_op_counts_and_agreement_matches_the_outputs(net, frames):
    ev = video.evaluate_stream(net, frames, chunk=4, progress=False)
    # the same stream run by hand: original outputs and the sigma-delta network's op counts
    net.set_mode("original")
    original = net.run(frames)
    net.set_mode("sigma-delta")
    net.per_step_counts = "total"  # per-step counts are opt-in
    out = net.run(frames)
    counts = net.op_counts()
    np.testing.assert_allclose(ev.ops["sigma_delta"], counts.per_step("sigma_delta"), rtol=1e-12)
    np.testing.assert_allclose(ev.ops["rounding"], counts.per_step("rounding"), rtol=1e-12)
    np.testing.assert_allclose(ev.ops["original"], counts.per_step("dense"), rtol=1e-12)
    assert ev.ops["sigma_delta"][0] == ev.ops["rounding"][0]  # the first frame is differenced against zero
    top1 = (out.argmax(-1) == original.argmax(-1))[:, 0].double().numpy()
    top5 = (original.topk(5, -1).indices == out.argmax(-1, keepdim=True)).any(-1)[:, 0].double().numpy()
    np.testing.assert_array_equal(ev.top1_agree, top1)
    np.testing.assert_array_equal(ev.top5_agree, top5)
    assert (ev.top5_agree >= ev.top1_agree).all()
    for network in video.NETWORKS:  # per-layer counts add up to the totals
        np.testing.assert_allclose(sum(ev.ops_per_layer[network].values()), ev.ops[network], rtol=1e-12)


def test_results_do_not_depend_on_the_chunking_and_the_net_is_left_as_it_was(net, frames):
    net.set_mode("rounding")
    a = video.evaluate_stream(net, frames, chunk=3, progress=False, feature_distances=True)
    b = video.evaluate_stream(net, iter([frames[:7], frames[7:]]), progress=False, feature_distances=True)
    assert net.mode == "rounding"
    for n in video.NETWORKS:
        np.testing.assert_allclose(a.ops[n], b.ops[n], rtol=1e-9)
    np.testing.assert_array_equal(a.top1_agree, b.top1_agree)
    # float32 passes of another batch size: equal to float32 precision
    np.testing.assert_allclose(a.l1_distance, b.l1_distance, rtol=1e-4, atol=1e-7, equal_nan=True)


def test_float32_increments_count_like_float64_increments_on_a_small_net(net, frames):
    exact = video.evaluate_stream(net, frames, progress=False)
    net.set_delta_dtype(torch.float32)
    fast = video.evaluate_stream(net, frames, progress=False)
    np.testing.assert_allclose(fast.ops["sigma_delta"], exact.ops["sigma_delta"], rtol=1e-3)
    np.testing.assert_array_equal(fast.top1_agree, exact.top1_agree)
    assert net.delta_dtype == torch.float32  # kept: it is the net's setting


def test_feature_distances_follow_their_definition(net, frames):
    ev = video.evaluate_stream(net, frames, chunk=4, progress=False, feature_distances=True)
    assert ev.feature_maps == list(net.quantizers) and ev.l1_distance.shape == (len(net.quantizers), len(frames))
    assert np.isnan(ev.l1_distance[:, 0]).all() and np.isnan(ev.cosine_similarity[:, 0]).all()
    # layer 0 is the input: check it by hand
    x = frames[:, 0].flatten(1).double()
    unit = x / x.abs().sum(1, keepdim=True)
    l1 = (unit[1:] - unit[:-1]).abs().sum(1).numpy()
    cos = torch.nn.functional.cosine_similarity(x[1:], x[:-1], dim=1).numpy()
    np.testing.assert_allclose(ev.l1_distance[0, 1:], l1, rtol=1e-9)
    np.testing.assert_allclose(ev.cosine_similarity[0, 1:], cos, rtol=1e-9)
    assert (ev.l1_distance[:, 1:] >= 0).all() and (ev.l1_distance[:, 1:] <= 2 + 1e-9).all()


def test_identical_frames_cost_nothing_after_the_first(net):
    still = torch.rand(1, 1, 3, 16, 16).expand(6, 1, 3, 16, 16).contiguous()
    ev = video.evaluate_stream(net, still, progress=False, feature_distances=True)
    assert ev.ops["sigma_delta"][0] > 0 and (ev.ops["sigma_delta"][1:] == 0).all()
    assert ev.top1_agree[1:].tolist() == [ev.top1_agree[0]] * 5
    np.testing.assert_allclose(ev.l1_distance[:, 1:], 0, atol=1e-12)
    s = ev.summary(1)
    assert s["ops_sigma_delta_per_frame"] == 0 and s["reduction"] == math.inf


def test_summary_energy_and_cumulative_means(net, frames):
    ev = video.evaluate_stream(net, frames, progress=False)
    s = ev.summary(2, 8)
    assert s["frames"] == 6
    assert s["ops_sigma_delta_per_frame"] == pytest.approx(ev.ops["sigma_delta"][2:8].mean())
    assert s["reduction"] == pytest.approx(s["ops_original_per_frame"] / s["ops_sigma_delta_per_frame"])
    # int32: additions 0.1 pJ; the original's ops are half multiplies (3.1 pJ), half adds: 1.6 pJ per op
    assert s["energy_nj_per_frame"]["sigma_delta"] == pytest.approx(0.1e-3 * s["ops_sigma_delta_per_frame"])
    assert s["energy_nj_per_frame"]["original"] == pytest.approx(1.6e-3 * s["ops_original_per_frame"])
    np.testing.assert_allclose(ev.cumulative([1, 0, 1, 1]), [1, 0.5, 2 / 3, 0.75])
    rows = ev.frame_rows()
    assert len(rows) == len(frames) and set(rows[0]) == {"index", "ops", "top1_agree", "top5_agree"}
    assert set(rows[0]["ops"]) == {"original", "rounding", "sigma_delta", "sigma_delta_hybrid", "events"}
    text = video.format_summary(ev, [f"class {i}" for i in range(10)], title="toy")
    assert "reduction" in text and "hybrid" in text and "class" in text


def test_hybrid_takes_the_cheaper_path_per_layer_and_frame(net, frames):
    net.set_scales({name: 64.0 for name in net.scales})  # fine scales: some layers cost more than dense
    ev = video.evaluate_stream(net, frames, progress=False)
    sd, dense, hybrid = (ev.ops_per_layer[n] for n in ("sigma_delta", "original", "sigma_delta_hybrid"))
    assert any((sd[layer] > dense[layer]).any() for layer in ev.layers)  # the fallback is exercised
    assert any((sd[layer] < dense[layer]).any() for layer in ev.layers)
    for layer in ev.layers:
        np.testing.assert_array_equal(hybrid[layer], np.minimum(sd[layer], dense[layer]))
    assert (ev.ops["sigma_delta_hybrid"] <= np.minimum(ev.ops["sigma_delta"], ev.ops["original"])).all()
    s = ev.summary()
    assert s["reduction_hybrid"] >= max(1.0, s["reduction"])
    # energy: additions (0.1 pJ) where sigma-delta is taken, the original's 1.6 pJ per op where dense is
    expected = sum(np.where(sd[layer] <= dense[layer], 0.1e-3 * sd[layer], 1.6e-3 * dense[layer])
                   for layer in ev.layers).mean()
    assert s["energy_nj_per_frame"]["sigma_delta_hybrid"] == pytest.approx(expected)


def test_plot_stream_writes_a_png(net, frames, tmp_path):
    ev = video.evaluate_stream(net, frames, progress=False)
    path = tmp_path / "plot.png"
    video.plot_stream(ev, path, title="toy", splice=5)
    assert path.read_bytes()[:4] == b"\x89PNG" and not list(tmp_path.glob(".*.tmp"))


def test_bad_input_raises_before_anything_runs(net, frames):
    with pytest.raises(ValueError, match="precision"):
        video.evaluate_stream(net, frames, progress=False, precision="int4")
    with pytest.raises(ValueError, match="no frame"):
        video.evaluate_stream(net, iter([]), progress=False)
    with pytest.raises(sigmadelta.StreamError):
        video.evaluate_stream(net, frames[:, :, :2], progress=False)


# ---------------------------------------------------------------------------------------------------------
# sigmadelta.scales


def test_scales_round_trip_and_checks(net, tmp_path):
    path = tmp_path / "s.json"
    sc.save_scales(path, net, model="toy", meta={"lam": 1e-9})
    content = json.loads(path.read_text())
    assert content["model"] == "toy" and content["layers"] == list(net.scales) and content["meta"] == {"lam": 1e-9}
    other = sigmadelta.convert(residual_cnn(), torch.zeros(1, 3, 16, 16))
    assert sc.apply_scales(other, path, model="toy") == {"lam": 1e-9}
    assert other.scales == net.scales
    with pytest.raises(sc.ScalesError, match="for model 'toy', not 'other'"):
        sc.load_scales(path, net, model="other")
    mlp = sigmadelta.convert(torch.nn.Sequential(torch.nn.Linear(4, 3)).eval(), torch.zeros(1, 4))
    with pytest.raises(sc.ScalesError, match="does not fit this network's layers"):
        sc.load_scales(path, mlp)
    for text, match in (("{", "invalid JSON"), ('{"format": "x"}', "not a scales file"),
                        (json.dumps({**content, "scales": {**content["scales"], "stem": -1}}), "finite number > 0")):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(sc.ScalesError, match=match):
            sc.load_scales(bad, net)
    with pytest.raises(FileNotFoundError):
        sc.load_scales(tmp_path / "missing.json")
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_per_channel_scales_round_trip(tmp_path):
    net = sigmadelta.convert(residual_cnn(), torch.zeros(1, 3, 16, 16), per_channel_scales=True)
    net.set_scales({name: torch.rand_like(k) + 0.5 for name, k in net.scales.items()})
    sc.save_scales(tmp_path / "s.json", net, model="toy")
    other = sigmadelta.convert(residual_cnn(), torch.zeros(1, 3, 16, 16), per_channel_scales=True)
    sc.apply_scales(other, tmp_path / "s.json")
    for name, k in net.scales.items():
        torch.testing.assert_close(other.scales[name], k)


def test_calibration_is_cached_by_model_frames_init_and_lam(net, cache):
    frames = correlated_stream(6, (3, 16, 16), step_std=0.02, generator=torch.Generator().manual_seed(2))
    net.set_scales({name: 4.0 for name in net.scales})
    first = sc.calibrate_sweep(net, frames, [1e-6, 1e-3], model="toy", init_scale=None, clip="synthetic", epochs=1, lr=0.05,
                               progress=False)
    assert not any(c.cached for c in first) and all(c.path.is_file() for c in first)
    assert net.scales == {name: 4.0 for name in net.scales}  # the sweep leaves the net's scales alone
    assert first[0].meta["lam"] == 1e-6 and first[0].meta["clip"] == "synthetic"
    # a second call reads them back; calibrate() sets them
    again = sc.calibrate(net, frames, 1e-3, model="toy", init_scale=None, epochs=1, lr=0.05, progress=False)
    assert again.cached and again.scales == first[1].scales
    assert net.scales == pytest.approx(first[1].scales)
    # other settings, frames or initial scales are other entries
    net.set_scales({name: 4.0 for name in net.scales})
    assert not sc.calibrate_sweep(net, frames, [1e-3], model="toy", init_scale=None, epochs=2, lr=0.05, progress=False)[0].cached
    assert not sc.calibrate_sweep(net, frames[:5], [1e-3], model="toy", init_scale=None, epochs=1, lr=0.05, progress=False)[0].cached
    net.set_scales({name: 2.0 for name in net.scales})
    assert not sc.calibrate_sweep(net, frames, [1e-3], model="toy", init_scale=None, epochs=1, lr=0.05, progress=False)[0].cached
    # another thread count rounds the sums another way: another entry; the same count named explicitly: the same
    threads = torch.get_num_threads()
    assert sc.calibrate_sweep(net, frames, [1e-3], model="toy", init_scale=None, epochs=1, lr=0.05, progress=False,
                              num_threads=threads)[0].cached
    assert not sc.calibrate_sweep(net, frames, [1e-3], model="toy", init_scale=None, epochs=1, lr=0.05, progress=False,
                                  num_threads=threads + 1)[0].cached
    assert sc.calibrate_sweep(net, frames, [1e-3], model="toy", init_scale=None, epochs=2, lr=0.05, progress=False, cache=False)
    assert first[0].meta["config"] == sc.PAPER_VIDEO.replace(lr=0.05, epochs=1, init_scale=None, lam=1e-6).to_dict()
    with pytest.raises(sigmadelta.ConfigError, match="unknown settings"):
        sc.calibrate_sweep(net, frames, [1e-3], model="toy", momentum=0.9)
    with pytest.raises(sigmadelta.ConfigError, match="lr must be"):
        sc.calibrate_sweep(net, frames, [1e-3], model="toy", lr=-0.1)
    # the paper's recipe starts every scale at k = 16, whatever the net holds
    net.set_scales({name: 2.0 for name in net.scales})
    paper = sc.calibrate_sweep(net, frames, [1e-3], model="toy", epochs=1, lr=0.05, progress=False, cache=False)
    assert paper[0].meta["init"] == {name: 16.0 for name in net.scales}


def test_default_lam():
    assert sc.default_lam("vgg19") == 1e-11  # the paper's
    assert sc.default_lam("efficientnet-lite0") == sc.DEFAULT_LAMS["efficientnet-lite0"]


# ---------------------------------------------------------------------------------------------------------
# the command line: errors are clear, exit code 2, nothing written


def _clip():
    from sigmadelta.data import clip_path

    return str(clip_path("bikes"))


@pytest.mark.parametrize("argv, message", [
    (["run", "VIDEO", "--model", "nope"], "unknown model 'nope'"),
    (["run", "/no/such/video.mp4", "--model", "efficientnet-lite0"], "no video file"),
    (["run", "VIDEO", "--model", "efficientnet-lite0", "--scales", "/no/such.json"], "no scales file"),
    (["run", "VIDEO", "--model", "efficientnet-lite0", "--calibrate", "nope"], "neither a bundled clip"),
    (["run", "VIDEO", "--model", "efficientnet-lite0", "--frames", "0"], "argument --frames: must be >= 1"),
    (["optimize", "--model", "nope", "--calibrate", "carphone", "-o", "OUT"], "unknown model 'nope'"),
])
def test_cli_errors_exit_2_and_write_nothing(argv, message, tmp_path, capsys):
    argv = [a.replace("VIDEO", _clip()).replace("OUT", str(tmp_path / "s.json")) for a in argv]
    assert main(argv + ["--json", str(tmp_path / "r.json")] if argv[0] == "run" else argv) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cli_refuses_a_scales_file_of_another_model(net, tmp_path, capsys):
    path = tmp_path / "s.json"
    sc.save_scales(path, net, model="toy")
    assert main(["run", _clip(), "--model", "efficientnet-lite0", "--scales", str(path),
                 "--json", str(tmp_path / "r.json")]) == 2
    assert "holds scales for model 'toy', not 'efficientnet-lite0'" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_help_lists_run_and_optimize(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for option in ("--model", "--weights", "--scales", "--calibrate", "--lam", "--frames", "--json", "--plot"):
        assert option in text


# ---------------------------------------------------------------------------------------------------------
# end to end on EfficientNet-Lite0 (slow)


@pytest.mark.slow
def test_optimize_then_run_on_a_real_clip(tmp_path, cache, capsys):
    scales = tmp_path / "scales.json"
    assert main(["optimize", "--model", "efficientnet-lite0", "--calibrate", "carphone", "--calibrate-frames", "2",
                 "--epochs", "1", "-o", str(scales)]) == 0
    content = json.loads(scales.read_text())
    assert content["model"] == "efficientnet-lite0" and len(content["scales"]) == 50
    assert content["meta"]["lam"] == sc.default_lam("efficientnet-lite0")
    out, plot = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["run", _clip(), "--model", "efficientnet-lite0", "--scales", str(scales), "--frames", "5",
                 "--chunk", "3", "--json", str(out), "--plot", str(plot)]) == 0
    report = json.loads(out.read_text())
    assert report["model"] == "efficientnet-lite0" and len(report["frames"]) == 5
    frame = report["frames"][1]
    assert set(frame) == {"index", "ops", "top1_agree", "top5_agree"} and frame["index"] == 1
    assert frame["ops"]["original"] == pytest.approx(770_374_104)  # EfficientNet-Lite0 at 224x224, 2 ops per MAC
    assert frame["ops"]["sigma_delta"] < frame["ops"]["rounding"]
    summary = report["summary"]
    for key in ("ops_original_per_frame", "ops_sigma_delta_per_frame", "reduction", "top1_agreement",
                "top5_agreement"):
        assert key in summary
    ratio = summary["ops_original_per_frame"] / summary["ops_sigma_delta_per_frame"]
    assert summary["reduction"] == pytest.approx(ratio)
    assert plot.read_bytes()[:4] == b"\x89PNG"
    text = capsys.readouterr().out
    assert "reduction" in text and "top-1" in text


@pytest.mark.slow
def test_reproduce_video_quick(tmp_path, cache):
    assert main(["reproduce", "video", "--quick", "--out", str(tmp_path)]) == 0
    for name in ("video_fig5.png", "video_fig6.png", "video_tradeoff.png", "frames.csv", "results.json", "results.md"):
        assert (tmp_path / name).stat().st_size > 0, name
    results = json.loads((tmp_path / "results.json").read_text())
    assert [s["clip"] for s in results["config"]["test"]] == ["bigbuckbunny", "bikes"]
    d = results["default"]
    assert d["first_frame_ops"]["sigma_delta"] == pytest.approx(d["first_frame_ops"]["rounding"])
    for clip in ("bigbuckbunny", "bikes"):
        s = d["summary"][clip]
        assert s["frames"] == 8 and 0 <= s["top1_agreement"] <= s["top5_agreement"] <= 1
    assert results["speed"]["ratio_float64"] > 0 and len(results["feature_distance_means"]["l1"]) == 50
    assert len((tmp_path / "frames.csv").read_text().splitlines()) == 17
