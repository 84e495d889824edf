"""What a user compares a delta network with (sigmadelta.eval.metrics and StreamEvaluation.judged), on hand-made
answer sequences: decisive frames, the frame skipper at equal cost, change latency. Everything here is integers
(classes, frame counts) or ratios of them: compared exactly, or with pytest.approx where a mean divides.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sigmadelta
from sigmadelta.eval import decisive, metrics, video
from sigmadelta.eval.report import format_summary
from sigmadelta.testing import correlated_stream, residual_cnn

# ---------------------------------------------------------------------------------------------------------
# pure functions


def test_decisive_needs_every_draw_to_keep_the_answer():
    clean = np.array([[1, 2], [3, 3], [5, 0]])  # (T, B)
    noisy = np.array([[[1, 2], [3, 4], [5, 0]],
                      [[1, 2], [3, 3], [6, 0]]])  # (D, T, B)
    np.testing.assert_array_equal(metrics.decisive(clean, noisy), [[True, True], [True, False], [False, True]])
    with pytest.raises(ValueError, match="draws first"):
        metrics.decisive(clean, noisy[:, :2])


def test_held_answers_repeat_every_nth_frame():
    answers = np.arange(7)
    assert metrics.held_answers(answers, 1).tolist() == list(range(7))
    assert metrics.held_answers(answers, 3).tolist() == [0, 0, 0, 3, 3, 3, 6]
    assert metrics.held_answers(answers, 100).tolist() == [0] * 7
    top = np.arange(7 * 2 * 5).reshape(7, 2, 5)  # (T, B, k): whole rows are held
    np.testing.assert_array_equal(metrics.held_answers(top, 4)[5], top[4])
    with pytest.raises(ValueError, match="period"):
        metrics.held_answers(answers, 0)


@given(reduction=st.floats(0.01, 500, allow_nan=False), frames=st.integers(1, 400))
def test_the_skipper_at_a_networks_cost_spends_at_least_as_much(reduction, frames):
    n = metrics.skip_period(reduction, frames)
    assert 1 <= n <= frames
    if 1 <= reduction <= frames:  # (below 1 the skipper is the original itself; above, it runs frame 0 alone)
        assert metrics.skip_cost(frames, n) >= 1 / reduction
    assert metrics.skip_cost(frames, n) == math.ceil(frames / n) / frames


def test_skip_period_edges():
    assert metrics.skip_period(7.0, 100) == 7 and metrics.skip_period(6.999, 100) == 6
    assert metrics.skip_period(0.5, 10) == 1  # the network costs more than the original: the original itself
    assert metrics.skip_period(math.inf, 10) == 10
    with pytest.raises(ValueError):
        metrics.skip_period(0.0, 10)


def test_answer_changes_count_only_answers_that_stay():
    #       0  1  2  3  4  5  6  7  8  9 10 11
    top1 = [1, 1, 2, 1, 1, 1, 3, 3, 3, 3, 4, 4]
    # 2 at frame 2 flickers (1 frame), 1 at 3 stays 3, 3 at 6 stays 4, 4 at 10 stays 2 (the stream ends)
    assert metrics.answer_changes(top1).tolist() == [3, 6]
    assert metrics.answer_changes(top1, min_run=1).tolist() == [2, 3, 6, 10]
    assert metrics.answer_changes(top1, min_run=4).tolist() == [6]
    assert metrics.answer_changes([5] * 10).tolist() == []
    with pytest.raises(ValueError, match="one stream"):
        metrics.answer_changes(np.zeros((4, 2)))


def test_change_latency_by_hand():
    original = [1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3]  # changes at 3 (to 2, run of 4) and 7 (to 3, run of 5)
    same = metrics.change_latency(original, original)
    assert same == metrics.ChangeLatency(changes=2, mean_frames=0.0, missed=0, agreement_after=1.0)
    late = [1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3]  # follows 2 frames late each time
    assert metrics.change_latency(original, late) == metrics.ChangeLatency(2, 2.0, 0, 2 / 6)
    never = [1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3]  # never shows 2 while the original does: its whole run, 4
    assert metrics.change_latency(original, never) == metrics.ChangeLatency(2, 2.0, 1, 3 / 6)
    # shown only after the original moved on does not count as following
    after = [1, 1, 1, 1, 1, 1, 1, 2, 3, 3, 3, 3]
    assert metrics.change_latency(original, after).missed == 1
    quiet = metrics.change_latency([1] * 5, [1] * 5)
    assert quiet.changes == 0 and math.isnan(quiet.mean_frames) and math.isnan(quiet.agreement_after)
    with pytest.raises(ValueError, match="shape"):
        metrics.change_latency([1, 2], [1, 2, 3])


def test_masked_mean():
    assert metrics.masked_mean([1, 0, 1, 1], [True, True, False, False]) == 0.5
    assert math.isnan(metrics.masked_mean([1, 0], [False, False]))


# ---------------------------------------------------------------------------------------------------------
# StreamEvaluation.judged on a hand-made record


def _record(original_top1, network_top1, decisive=None, events=None):
    """A StreamEvaluation of one or more streams with given answers (the other top classes fixed) and events."""
    o = np.asarray(original_top1).reshape(len(original_top1), -1)
    n = np.asarray(network_top1).reshape(o.shape)
    T, B = o.shape
    rest = np.broadcast_to(np.arange(90, 94), (T, B, 4))
    original, network = np.concatenate([o[..., None], rest], -1), np.concatenate([n[..., None], rest], -1)
    top1, top5 = metrics.class_agreement(network, original)
    ops = {name: np.full(T, 100.0) for name in video.NETWORKS}
    ops["sigma_delta_events"] = np.full(T, 100.0 / 4) if events is None else np.asarray(events, float)
    ops["sigma_delta"] = np.full(T, 100.0 / 2)
    return video.StreamEvaluation(
        frames=T, layers=[], ops=ops, ops_per_layer={}, top1_agree=top1.mean(1), top5_agree=top5.mean(1),
        original_top5=original, original_top1_prob=np.full((T, B), 0.5), sigma_delta_top5=network,
        max_abs_logit_diff=np.zeros(T), hybrid_split=(np.zeros(T), np.zeros(T)),
        decisive=None if decisive is None else np.asarray(decisive, bool).reshape(o.shape))


def test_judged_numbers_by_hand():
    original = [1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]  # one lasting change, at frame 4
    network = [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2]  # follows one frame late
    flags = [1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1]  # the frames around the change are not decisive
    ev = _record(original, network, flags)  # events 4x fewer than the original: the skipper runs every 4th frame
    j = ev.judged()
    assert j["decisive_frames"] == 10 and j["top1_agreement_decisive"] == 1.0
    skip = j["frame_skip"]["events"]
    # runs 0, 4, 8: held 1 1 1 1 2 2 2 2 2 2 2 2: agrees everywhere (the change falls on a frame it runs)
    assert skip == dict(n=4, reduction=4.0, top1_agreement=1.0, top5_agreement=1.0, top1_agreement_decisive=1.0)
    assert j["frame_skip"]["additions"]["n"] == 2
    assert j["change_latency"] == dict(
        changes=1, sigma_delta=dict(changes=1, mean_frames=1.0, missed=0, agreement_after=2 / 3),
        frame_skip=dict(changes=1, mean_frames=0.0, missed=0, agreement_after=1.0))
    s = ev.summary()
    assert s["top1_agreement"] == pytest.approx(11 / 12) and s["frame_skip"] == j["frame_skip"]
    # a segment is a stream of its own: from frame 5 the skipper runs 5 and 9, and the answer never changes
    seg = ev.judged(5, 12)
    assert seg["frame_skip"]["events"]["n"] == 4 and seg["change_latency"]["changes"] == 0
    assert seg["change_latency"]["sigma_delta"]["mean_frames"] is None


def test_the_skipper_loses_a_change_between_the_frames_it_runs():
    original = [7, 7, 7, 7, 7, 3, 3, 3, 3, 3, 3, 3]
    ev = _record(original, original, events=np.full(12, 100.0 / 4.5))  # floor(4.5) = 4: runs 0, 4, 8
    skip = ev.judged()["frame_skip"]["events"]
    assert skip["n"] == 4 and skip["reduction"] == 4.0 and skip["top1_agreement"] == pytest.approx(9 / 12)
    assert skip["top1_agreement_decisive"] is None  # not judged
    assert ev.judged()["change_latency"]["frame_skip"] == dict(changes=1, mean_frames=3.0, missed=0,
                                                               agreement_after=0.0)
    curve = ev.frame_skip_curve(periods=range(1, 20))
    assert [c["n"] for c in curve] == list(range(1, 13))  # periods beyond the stream are left out
    assert curve[0]["top1_agreement"] == 1.0 and curve[11]["top1_agreement"] == pytest.approx(5 / 12)
    # the top-5 of held answers: the held class within the original's current top 5 (3 is not in [7, 90..93])
    assert curve[11]["top5_agreement"] == pytest.approx(5 / 12)


def test_judged_pools_the_streams():
    original = np.array([[1, 5], [1, 5], [2, 5], [2, 6], [2, 6], [2, 6]])  # stream 0 changes at 2, stream 1 at 3
    network = np.array([[1, 5], [1, 5], [1, 5], [2, 5], [2, 5], [2, 6]])  # 1 frame late, 2 frames late
    lat = _record(original, network).judged()["change_latency"]["sigma_delta"]
    assert lat == dict(changes=2, mean_frames=1.5, missed=0, agreement_after=pytest.approx(3 / 6))


# ---------------------------------------------------------------------------------------------------------
# decisive frames on a real stream


@pytest.fixture
def net(residual_net):
    return residual_net


@pytest.fixture
def frames():
    return correlated_stream(12, (3, 16, 16), step_std=0.05, generator=torch.Generator().manual_seed(1))


def test_no_noise_leaves_every_frame_decisive(net, frames):
    # zero noise: the noisy input is the clean one, the same computation: the same argmax, exactly
    assert decisive.decisive_frames(net, frames, 0.0).all()


def _margin(logits: torch.Tensor) -> float:
    """The smallest gap between the best and the second-best output: how far every argmax is from a tie."""
    top2 = logits.topk(2, -1).values
    return float((top2[..., 0] - top2[..., 1]).min())


def test_decisive_flags_do_not_depend_on_the_chunking_and_agree_with_evaluate_stream(frames):
    torch.manual_seed(0)  # float64: chunks of other sizes may take other kernels; the argmaxes stay away from ties
    net = sigmadelta.convert(residual_cnn().double(), torch.zeros(1, 3, 16, 16, dtype=torch.float64))
    frames, grey = frames.double(), 1.3  # noise of ±2.6 on inputs in [0, 1]: some frames lose their answer
    level, draws = decisive.DECISIVE["level"], decisive.DECISIVE["draws"]
    with torch.no_grad():
        noisy = [net.run(torch.stack([f + decisive.input_noise(f, grey, draw=d, frame=t) for t, f in enumerate(frames)]))
                 for d in range(draws)]
        clean = net.run(frames)
    assert min(_margin(o) for o in noisy + [clean]) > 1e-9
    expected = metrics.decisive(clean.argmax(-1).numpy(), torch.stack(noisy).argmax(-1).numpy())
    a = decisive.decisive_frames(net, frames, grey, chunk=5)
    b = decisive.decisive_frames(net, iter([frames[:2], frames[2:]]), grey)
    np.testing.assert_array_equal(a, expected)
    np.testing.assert_array_equal(b, expected)  # the noise is seeded per draw and frame
    assert a.shape == (12, 1) and 0 < a.sum() < 12 and level == 2.0
    ev = video.evaluate_stream(net, frames, chunk=4, progress=False, grey=grey)
    np.testing.assert_array_equal(ev.decisive, a)
    again = video.evaluate_stream(net, frames, chunk=4, progress=False, decisive=a)
    assert again.summary() == ev.summary()
    rows = ev.frame_rows()
    assert [r["original"]["decisive"] for r in rows] == a[:, 0].tolist()
    text = format_summary(ev, [f"class {i}" for i in range(10)])
    assert "decisive frames" in text and f"{int(a.sum())} of 12" in text and "frame skipping" in text
    assert "change latency" in text
    with pytest.raises(ValueError, match="not both"):
        video.evaluate_stream(net, frames, progress=False, grey=grey, decisive=a)
    with pytest.raises(ValueError, match="do not fit"):
        video.evaluate_stream(net, frames, progress=False, decisive=a[:5])


def test_grey_level_follows_the_preprocessing():
    def caffe(frames):  # 0-255 minus a mean, BGR: one grey level is 1
        return torch.as_tensor(frames, dtype=torch.float32).permute(0, 3, 1, 2).flip(1) - 117.0

    def centred(frames):  # [-1, 1]: one grey level is 2/255
        return torch.as_tensor(frames, dtype=torch.float32).permute(0, 3, 1, 2) / 127.5 - 1

    np.testing.assert_allclose(decisive.grey_level(caffe).flatten(), [1.0] * 3, rtol=1e-6)
    np.testing.assert_allclose(decisive.grey_level(centred).flatten(), [2 / 255] * 3, rtol=1e-5)
    assert decisive.grey_level(centred).shape == (3, 1, 1)
