"""`sigmadelta run` and `optimize`: errors are clear (exit code 2, nothing written), help lists
the options, and end to end on EfficientNet-Lite0 (slow)."""

import json

import pytest

from sigmadelta import recipes
from sigmadelta.cli import main
from sigmadelta.files import scales as sc


@pytest.fixture
def net(residual_net):  # tests/conftest.py
    return residual_net


def _clip():
    from sigmadelta.data import clip_path

    return str(clip_path("bikes"))


@pytest.mark.parametrize("argv, message", [
    (["run", "VIDEO", "--model", "nope"], "invalid choice: 'nope'"),
    (["run", "/no/such/video.mp4", "--model", "efficientnet-lite0"], "no video file"),
    (["run", "VIDEO", "--model", "efficientnet-lite0", "--scales", "/no/such.json"], "no scales file"),
    (["run", "VIDEO", "--model", "efficientnet-lite0", "--calibrate", "nope"], "is neither a clip name"),
    (["run", "VIDEO", "--model", "efficientnet-lite0", "--frames", "0"], "argument --frames: must be >= 1"),
    (["optimize", "--model", "nope", "--calibrate", "carphone", "-o", "OUT"], "invalid choice: 'nope'"),
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


@pytest.mark.slow
def test_optimize_then_run_on_a_real_clip(tmp_path, cache, capsys):
    scales = tmp_path / "scales.json"
    assert main(["optimize", "--model", "efficientnet-lite0", "--calibrate", "carphone", "--calibrate-frames", "2",
                 "--epochs", "1", "-o", str(scales)]) == 0
    content = json.loads(scales.read_text())
    assert content["model"] == "efficientnet-lite0" and len(content["scales"]) == 50
    assert content["meta"]["lam"] == recipes.scale_lam("efficientnet-lite0")
    out, plot = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["run", _clip(), "--model", "efficientnet-lite0", "--scales", str(scales), "--frames", "5",
                 "--chunk", "3", "--json", str(out), "--plot", str(plot)]) == 0
    report = json.loads(out.read_text())
    assert report["model"] == "efficientnet-lite0" and len(report["frames"]) == 5
    frame = report["frames"][1]
    assert set(frame) == {"index", "ops", "top1_agree", "top5_agree", "original"} and frame["index"] == 1
    assert frame["original"]["name"] and 0 < frame["original"]["probability"] <= 1
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
