"""What a new user meets first: shipped scales, every argument checked before any work, messages that say what
is wrong, help that tells the truth."""

import json
import subprocess
import sys

import pytest
import torch

import sigmadelta
from sigmadelta import models, recipes
from sigmadelta.cli import main
from sigmadelta.cli.parser import IMAGE_MODELS


def _no_work(monkeypatch):
    """Any model loading or scale learning fails the test: the command must refuse before it gets there (a failure
    inside the command is an internal error, exit code 1, not the 2 the cases below expect)."""
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(sigmadelta.models, "get", forbidden)
    monkeypatch.setattr("sigmadelta.learn.calibrate.calibrate", forbidden)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def video():
    from sigmadelta.data import clip_path

    return str(clip_path("testMovie"))


@pytest.fixture
def scales_json(tmp_path):
    net = sigmadelta.convert(torch.nn.Sequential(torch.nn.Linear(4, 3)).eval(), torch.zeros(1, 4))
    from sigmadelta.files.scales import save_scales

    return str(save_scales(tmp_path / "s.json", net, "squeezenet1_1"))


@pytest.mark.parametrize("argv, words", [
    (["--lam", "3e-10", "--scheme", "threshold", "--scheme-param", "-1"], "--scheme-param: must be a finite number >= 0"),
    (["--scheme-param", "0.5"], "--scheme-param is the parameter of --scheme hysteresis or threshold"),
    (["--scheme", "sigma-delta", "--scheme-param", "0.5"], "the sigma-delta scheme has no parameter"),
    (["--allocate-bands"], "--allocate-bands spreads the band of --scheme hysteresis or threshold"),
    (["--scheme", "sigma-delta", "--allocate-bands"], "--allocate-bands spreads the band"),
    (["--frame", "3"], "unrecognized arguments: --frame 3"),
    (["--calibrate", "nope"], "--calibrate 'nope' is neither a clip name"),
    (["--scales", "/no/such.json"], "no scales file /no/such.json"),
])
def test_run_refuses_before_any_work(argv, words, video, capsys, monkeypatch):
    _no_work(monkeypatch)
    assert main(["run", video, "--model", "squeezenet1_1"] + argv) == 2
    assert words in _one_line(capsys)


def test_a_folder_given_as_the_video_says_so(tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    assert main(["run", str(tmp_path), "--model", "squeezenet1_1"]) == 2
    assert f"video file {tmp_path} is a folder, not a file" in _one_line(capsys)


def test_vgg19_without_weights_asks_for_the_file(video, capsys, monkeypatch):
    _no_work(monkeypatch)
    assert main(["run", video, "--model", "vgg19"]) == 2
    assert "--model vgg19 needs --weights FILE" in _one_line(capsys)


@pytest.mark.parametrize("make, words", [
    (lambda d, s: s, "is not a fine-tuning checkpoint: it is a JSON file"),
    (lambda d, s: _truncated_checkpoint(d), "is not a fine-tuning checkpoint: it is a zip archive that ends early"),
])
def test_a_file_that_is_not_a_checkpoint_gets_one_line(make, words, tmp_path, scales_json, video, capsys,
                                                       monkeypatch):
    _no_work(monkeypatch)
    assert main(["run", video, "--checkpoint", make(tmp_path, scales_json)]) == 2
    line = _one_line(capsys)
    assert words in line and "weights_only" not in line and "miniz" not in line


def _truncated_checkpoint(d) -> str:
    torch.save({"format": "sigmadelta-finetune/2", "weights": torch.zeros(1000)}, d / "whole.pt")
    data = (d / "whole.pt").read_bytes()
    (d / "cut.pt").write_bytes(data[: len(data) // 2])
    return str(d / "cut.pt")


def test_optimize_checks_its_scheme_options_before_learning(tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    assert main(["optimize", "--model", "squeezenet1_1", "--calibrate", "carphone", "-o", str(tmp_path / "s.json"),
                 "--learn-scheme-param", "1e-9"]) == 2
    assert "--learn-scheme-param learns h or θ per quantizer" in _one_line(capsys)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv, words", [
    (["--frames", "2"], "--frames 2: bench needs at least 3 frames"),
    (["--data", "temporal-mnist", "--frames", "5"], "--data temporal-mnist is for the MNIST MLPs, not 'squeezenet1_1'"),
])
def test_bench_refuses_before_any_work(argv, words, capsys, monkeypatch):
    _no_work(monkeypatch)
    assert main(["bench", "--model", "squeezenet1_1", "--data", "testMovie"] + argv) == 2
    assert words in _one_line(capsys)


def test_help_tells_the_truth():
    def help_of(*command):
        out = subprocess.run([sys.executable, "-m", "sigmadelta", *command, "--help"], capture_output=True,
                             text=True, check=True).stdout
        return " ".join(out.split())  # argparse wraps lines where it likes

    run = help_of("run")
    assert all(m in run for m in IMAGE_MODELS) and "mnist-mlp" not in run
    for command in ("optimize", "finetune"):
        text = help_of(command)
        assert "required but" not in text and "--checkpoint" not in text and "squeezenet1_1" in text
    finetune = help_of("finetune")
    assert "learning the starting scales" in finetune and "fine-tuning (defaults: the model's recipe)" in finetune
    assert "random-net (Figure 2)" in help_of("reproduce")
    assert "(default 5)" in help_of("bench")


# ---------------------------------------------------------------------------------------------------------
# shipped scales


@pytest.mark.parametrize("model", ["squeezenet1_1", "efficientnet-lite0"])
def test_the_shipped_scales_load_and_fit_the_model(model):
    from sigmadelta.files.scales import apply_scales

    path = recipes.SHIPPED_SCALES / f"{model}.json"
    meta = json.loads(path.read_text())["meta"]
    config = recipes.scale_config(model).replace(lam=recipes.scale_lam(model))
    assert recipes.shipped_scales(model, config) == path  # what `run` uses by default
    assert recipes.shipped_scales(model, config.replace(epochs=1)) is None  # other settings: learned
    assert meta["clip"] == recipes.CALIBRATION_CLIP and meta["commit"] and meta["command"]
    bundle = models.get(model, progress=False)
    net = sigmadelta.convert(bundle.model, bundle.example_input())
    apply_scales(net, path, model)  # checks the model, every layer name and shape
    assert len(net.scales) == len(meta["init"]) and all(0 < k < 1e3 for k in net.scales.values())


@pytest.mark.slow
def test_run_uses_the_shipped_scales_at_once_and_says_so(video, cache, capsys, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("learned scales although they ship")

    monkeypatch.setattr("sigmadelta.learn.calibrate.calibrate", forbidden)
    assert main(["run", video, "--model", "squeezenet1_1", "--frames", "2"]) == 0
    assert f"scales: shipped with sigmadelta (λ = {recipes.scale_lam('squeezenet1_1'):g}, learned on carphone)" in \
        capsys.readouterr().out
