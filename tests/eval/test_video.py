"""Per-frame video evaluation (sigmadelta.eval.video) and its figure: ``pytest tests/eval/test_video.py``.

A small residual CNN and synthetic, temporally correlated frames. Where two computations of the same stream are
compared (another chunking, another delta dtype), the network is float64 and its levels are asserted away from
every decision, or the comparison has a stated tolerance.
"""

import math

import numpy as np
import pytest
import torch

import sigmadelta
from sigmadelta.eval import plots, video
from sigmadelta.eval.report import format_summary
from sigmadelta.testing import correlated_stream, decision_margin, residual_cnn


@pytest.fixture
def net(residual_net):  # tests/conftest.py
    return residual_net


@pytest.fixture
def frames():
    return correlated_stream(10, (3, 16, 16), step_std=0.01, generator=torch.Generator().manual_seed(1))


def test_per_frame_counts_match_op_counts_and_agreement_matches_the_outputs(net, frames):
    ev = video.evaluate_stream(net, frames, chunk=4, progress=False)
    # the same stream run by hand, in the same chunks (the same computation): outputs and op counts
    net.set_mode("original")
    original = torch.cat([net.run(frames[i:i + 4]) for i in range(0, len(frames), 4)])
    net.set_mode("sigma-delta")
    net.per_step_counts = "total"  # per-step counts are opt-in
    out = torch.cat([net.run(frames[i:i + 4]) for i in range(0, len(frames), 4)])
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


def test_results_do_not_depend_on_the_chunking_and_the_net_is_left_as_it_was(frames):
    torch.manual_seed(0)
    net = sigmadelta.convert(residual_cnn().double(), torch.zeros(1, 3, 16, 16, dtype=torch.float64))
    net.set_scales({name: 8.0 for name in net.scales})
    frames = frames.double()
    net.set_mode("sigma-delta").run(frames)
    assert decision_margin(net) > 1e-9  # chunks sum in other orders: no level may sit that close to a turn
    net.set_mode("rounding")
    a = video.evaluate_stream(net, frames, chunk=3, progress=False, feature_distances=True)
    b = video.evaluate_stream(net, iter([frames[:7], frames[7:]]), progress=False, feature_distances=True)
    assert net.mode == "rounding"
    for n in video.NETWORKS:
        np.testing.assert_array_equal(a.ops[n], b.ops[n])  # integers: exact
    np.testing.assert_array_equal(a.top1_agree, b.top1_agree)
    np.testing.assert_allclose(a.l1_distance, b.l1_distance, rtol=1e-9, atol=1e-12, equal_nan=True)


def test_float32_increments_count_like_float64_increments_on_a_small_net(net, frames):
    exact = video.evaluate_stream(net, frames, progress=False)
    net.set_delta_dtype(torch.float32)
    fast = video.evaluate_stream(net, frames, progress=False)
    np.testing.assert_allclose(fast.ops["sigma_delta"], exact.ops["sigma_delta"], rtol=1e-3)
    # float32 rounding may flip a level: agreement within one frame of ten
    assert abs(fast.top1_agree.mean() - exact.top1_agree.mean()) <= 0.1
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
    classes = [f"class {i}" for i in range(10)]
    rows = ev.frame_rows(classes)
    assert len(rows) == len(frames) and set(rows[0]) == {"index", "ops", "top1_agree", "top5_agree", "original"}
    assert set(rows[0]["ops"]) == {"original", "rounding", "sigma_delta", "sigma_delta_hybrid", "events"}
    best = int(ev.original_top5[3, 0, 0])
    assert rows[3]["original"] == {"class": best, "name": f"class {best}", "decisive": None,  # not judged
                                   "probability": pytest.approx(float(ev.original_top1_prob[3, 0]))}
    assert 0.1 <= rows[3]["original"]["probability"] <= 1  # the best of 10 classes
    text = format_summary(ev, classes, title="toy")
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
    plots.plot_stream(ev, path, title="toy", splice=5)
    assert path.read_bytes()[:4] == b"\x89PNG" and not list(tmp_path.glob(".*.tmp"))


def test_bad_input_raises_before_anything_runs(net, frames):
    with pytest.raises(ValueError, match="precision"):
        video.evaluate_stream(net, frames, progress=False, precision="int4")
    with pytest.raises(ValueError, match="no frame"):
        video.evaluate_stream(net, iter([]), progress=False)
    with pytest.raises(sigmadelta.StreamError):
        video.evaluate_stream(net, frames[:, :, :2], progress=False)
