"""The video experiments' quick paths end to end on the real test clips (`reproduce video`, `schemes`, `finetune`),
and the experiments' shared evaluation (sigmadelta.paper._common). Quick runs are smoke tests of the pipeline: they
check structure and invariants that hold whatever the float path (integers exactly, definitions by hand), never
the measured numbers.
"""

import json

import pytest
import torch

import sigmadelta
from sigmadelta.cli import main
from sigmadelta.paper import _common


@pytest.mark.slow
def test_reproduce_video_quick(tmp_path, cache):
    assert main(["reproduce", "video", "--quick", "--out", str(tmp_path)]) == 0
    figures = ["video_fig5_testMovie.png", "video_fig6_cityCC0.png", "video_tradeoff.png",
               "video_long_testMovie.png", "video_long_testMovie_looped.png"]
    for name in figures + ["frames.csv", "results.json", "results.md"]:
        assert (tmp_path / name).stat().st_size > 0, name
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["config"]["clips"]) == ["testMovie", "cityCC0"]
    d = results["default"]
    for clip in ("testMovie", "cityCC0"):
        first = d["first_frame_ops"][clip]
        assert first["sigma_delta"] == pytest.approx(first["rounding"])  # frame 0 against zero state: each clip alone
        r = d["clips"][clip]
        assert r["frames"] == 8 and 0 <= r["top1"] <= r["top5"] <= 1
        assert 0 <= r["decisive_frames"] <= 8 and r["skip"]["n"] >= 1
        assert [row["n"] for row in results["frame_skip_curves"][clip]] == list(range(1, 9))
    assert results["long_streams"]["testMovie_looped"]["frames"] == 8 + 7  # forwards, backwards: 2 passes
    assert len(results["feature_distance_means"]["testMovie"]["l1"]) == 50
    assert len((tmp_path / "frames.csv").read_text().splitlines()) == 1 + 2 * 8
    text = (tmp_path / "results.md").read_text()
    assert "frame skip" in text and "Long streams" in text


@pytest.mark.slow
def test_reproduce_schemes_quick(tmp_path, cache):
    from sigmadelta.paper import schemes

    schemes.run(tmp_path, quick=True, models_=("squeezenet1_1",), progress=False)
    results = json.loads((tmp_path / "results_squeezenet1_1.json").read_text())
    assert [(r["scheme"], r["allocated"]) for r in results["rows"]] == [
        ("sigma-delta", False), ("hysteresis", False), ("threshold", False), ("hysteresis", True), ("threshold", True)]
    uniform_theta = {n: 0.1 * s for n, s in results["stds"].items()}
    spread = results["rows"][-1]["params"]  # θ per quantizer, allocated on the training frames
    assert spread.keys() == uniform_theta.keys() and len(spread) == 18
    assert max(abs(spread[n] / uniform_theta[n] - 1) for n in spread) > 0.1  # really spread, not τ·σ again
    assert len(set(results["rows"][-2]["params"].values())) > 1  # h per quantizer
    assert list(results["clips"]) == ["testMovie", "cityCC0"]
    for clip in results["clips"]:  # the peers' baseline is never a spread setting
        assert results["targets"][clip]["baseline"] in (None, "threshold τ=0.1")
    for row in results["rows"]:
        for clip, r in row["clips"].items():
            assert r["reduction_events"] > 0 and 0 <= r["top1"] <= r["top5"] <= 1
            assert r["frames"] == 6 and r["skip"]["n"] == min(6, max(1, int(r["reduction_events"])))
            if row["scheme"] == "threshold":
                assert r["additions"] == r["events"]  # real-valued messages: additions are counted as events
    assert "### testMovie" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "schemes_squeezenet1_1.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_reproduce_finetune_quick(tmp_path, cache):
    from sigmadelta.paper import finetune

    results = finetune.run(tmp_path, quick=True, image_models=("squeezenet1_1",), mnist=False, progress=False)
    part = results["images"][0]
    assert [p["method"] for p in part["points"]] == ["scales only (paper)", "fine-tuned",
                                                     "fine-tuned weights, thresholds"]
    assert part["config"]["surrogate"] == "events" and part["train"] == ["carphone"]  # never a test clip
    for p in part["points"]:
        for clip, r in p["clips"].items():
            assert r["frames"] == 8 and 0 <= r["top1"] <= r["top5"] <= 1
            assert ("dense_top1" in r) == (p["method"] != "scales only (paper)")
    for name in ("results.json", "results.md", "finetune_tradeoff.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_evaluate_clips_reports_the_agreement_of_the_weights_own_dense_network():
    """Beside the delta network's agreement, that of the net's own dense network: 1 for unchanged weights, and for
    changed weights the argmax comparison made by hand (the same chunks: the same computation, the same argmax)."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(6, 24), torch.nn.ReLU(), torch.nn.Linear(24, 10)).eval()
    reference, net = (sigmadelta.convert(model, torch.zeros(1, 6)) for _ in range(2))
    net.set_scales({n: 8.0 for n in net.scales})
    clips = {"a": (torch.randn(30, 1, 6, generator=torch.Generator().manual_seed(4)) * 0.3).cumsum(0)}
    decisive = {"a": None}
    row = _common.evaluate_clips(net, reference, clips, decisive, own_dense=True)["a"]
    assert row["dense_top1"] == 1.0 and row["decisive_frames"] is None and row["frames"] == 30
    with torch.no_grad():
        net.layers[list(net.layers)[-1]].weight.add_(torch.randn(10, 24) * 0.5)  # the reference keeps its own
    row = _common.evaluate_clips(net, reference, clips, decisive, own_dense=True)["a"]
    chunk, stream = _common.CHUNK, clips["a"]
    with torch.no_grad(), net.configured(mode="original", counting=False):
        mine = torch.cat([net.run(stream[i:i + chunk]) for i in range(0, len(stream), chunk)])[:, 0]
        theirs = torch.cat([reference.run(stream[i:i + chunk]) for i in range(0, len(stream), chunk)])[:, 0]
        by_hand = (mine.argmax(-1) == theirs.argmax(-1)).double().mean().item()
    assert row["dense_top1"] == by_hand < 1.0
    assert set(row["layers"]) == set(net.layers)


def test_targets_pick_the_cheapest_setting_that_meets_the_bar_and_name_the_costly_layers():
    from sigmadelta.paper import targets

    def row(label, events, top1, top5=1.0, peers=False):
        layers = {"a": dict(original=100.0, events=0.75 * events, additions=events),
                  "b": dict(original=100.0, events=0.25 * events, additions=events)}
        return dict(source="schemes", label=label, scheme="threshold" if peers else "hysteresis", peers=peers,
                    finetuned=False, clips={"testMovie": dict(events=events, top1=top1, top5=top5, layers=layers)})

    rows = [row("cheap but wrong", 5.0, 0.80), row("ours", 10.0, 0.95), row("top-5 short", 8.0, 0.95, 0.9),
            row("peers", 20.0, 0.92, peers=True)]
    ours = targets.best(rows, "testMovie", lambda r: not r["peers"])
    assert ours["label"] == "ours"  # the 8.0 fails top-5, the 5.0 top-1
    assert targets.best(rows, "testMovie", lambda r: not r["peers"], top5=False)["label"] == "top-5 short"
    assert targets.best(rows, "testMovie", lambda r: r["peers"])["label"] == "peers"
    cost = targets.where_the_cost_goes(dict(layers=ours["clips"]["testMovie"]["layers"]))
    assert [c["layer"] for c in cost] == ["a", "b"] and cost[0]["share"] == 0.75 and cost[0]["reduction"] == 100 / 7.5


@pytest.mark.parametrize("model", ["squeezenet1_1", "efficientnet-lite0"])
def test_the_scheme_defaults_are_those_read_off_the_committed_curves(model):
    from sigmadelta import recipes
    from sigmadelta.paper import default_out

    results = json.loads((default_out("schemes") / f"results_{model}.json").read_text())
    for scheme, best in results["defaults"].items():
        param, lam = recipes.scheme_setting(model, scheme)
        assert param == pytest.approx(best["param"]) and lam == pytest.approx(best["lam"] or recipes.scale_lam(model))
