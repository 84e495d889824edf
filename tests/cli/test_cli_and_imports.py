"""The command line and the package surface."""

import json
import subprocess
import sys

import pytest

from sigmadelta.cli import main


def test_synthetic_demo_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "demo.json"
    assert main(["demo", "--synthetic", "--frames", "60", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "sigma-delta" in text and "total ops / sample" in text
    result = json.loads(out.read_text())
    assert result["networks"]["dense"]["ops_per_sample"] == 397_190
    # float32 network: equal to float32 precision (the float64 bounds are tested in test_guarantees.py)
    assert result["checks"]["max_abs_sigma_delta_vs_rounding"] <= 1e-5
    assert result["checks"]["max_abs_temporal_difference_vs_original"] <= 1e-5
    assert result["networks"]["sigma_delta"]["ops_per_sample"] < result["networks"]["rounding"]["ops_per_sample"]


@pytest.mark.slow
def test_demo_on_the_pretrained_mlp_and_temporal_mnist(tmp_path, capsys):
    out = tmp_path / "demo.json"
    assert main(["demo", "--frames", "3000", "--calibrate", "3000", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    nets = result["networks"]
    assert result["steps"] == 3000 and nets["dense"]["class_error_percent"] < 3.0
    # on a temporal stream the sigma-delta network does far fewer ops than the dense original and the rounding net
    assert nets["sigma_delta"]["ops_per_sample"] < nets["rounding"]["ops_per_sample"] < nets["dense"]["ops_per_sample"]
    assert nets["sigma_delta"]["class_error_percent"] == nets["rounding"]["class_error_percent"]
    assert "Temporal-MNIST" in capsys.readouterr().out


def test_data_lists_datasets_clips_and_models(capsys):
    assert main(["data"]) == 0
    text = capsys.readouterr().out
    for name in ("mnist", "temporal-mnist", "bigbuckbunny", "bikes", "mnist-mlp", "efficientnet-lite0", "vgg19"):
        assert name in text


def test_help_lists_the_commands():
    proc = subprocess.run([sys.executable, "-m", "sigmadelta", "--help"], capture_output=True, text=True, check=True)
    for command in ("demo", "data", "reproduce"):
        assert command in proc.stdout


def test_import_is_lean():
    """Importing sigmadelta loads neither CUDA nor the heavy optional readers (video, zarr, plotting)."""
    code = ("import sys, torch, sigmadelta; "
            "heavy = [m for m in ('av', 'zarr', 'matplotlib') if m in sys.modules]; "
            "assert not heavy, heavy; assert not torch.cuda.is_initialized()")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_bench_writes_the_documented_json(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", "mnist-mlp", "--data", "temporal-mnist", "--frames", "40", "--repeats", "1",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    for key in ("model", "data", "command", "frames", "streams", "threads", "ms_per_frame", "speedup", "speedup_nchw",
                "events_ratio", "efficiency", "max_abs_diff", "top1_agreement", "frame_skipping_every"):
        assert key in result
    assert set(result["ms_per_frame"]) == {"nchw", "channels_last", "engine"}
    fastest = min(result["ms_per_frame"]["nchw"], result["ms_per_frame"]["channels_last"])
    assert result["speedup"] == pytest.approx(fastest / result["ms_per_frame"]["engine"])  # against the faster layout
    assert result["efficiency"] == pytest.approx(result["speedup"] / result["events_ratio"])
    # frames timed: the first frame of a stream is a full dense pass, untimed
    assert result["model"] == "mnist-mlp" and result["frames"] == 39 and result["events_ratio"] > 1
    assert result["command"].startswith("sigmadelta bench --model mnist-mlp")
    # float32: a level a last bit moves can flip (bounded in tests/runtime/test_events_float32.py); answers agree
    assert result["argmax_agreement"] >= 0.9


def test_bench_refuses_a_dataset_for_the_wrong_model(capsys):
    assert main(["bench", "--model", "efficientnet-lite0", "--data", "temporal-mnist"]) == 2
    assert "for the MNIST MLPs" in capsys.readouterr().err


def test_an_internal_error_is_not_reported_as_a_bad_argument(tmp_path, capsys, monkeypatch):
    """A KeyError raised inside the library is a bug of the package: exit 1 and a line asking to report it, the
    traceback under --debug; never "error:" and exit 2, which say the user's argument was bad."""
    import sigmadelta.eval.report

    def broken(*args, **kwargs):
        raise KeyError("a key the library lost")

    monkeypatch.setattr(sigmadelta.eval.report, "compare_networks", broken)
    argv = ["demo", "--synthetic", "--frames", "5", "--json", str(tmp_path / "d.json")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "internal error (KeyError: 'a key the library lost'); please report it" in err
    assert "error:" not in err and "Traceback" not in err and "--debug" in err
    assert main(["--debug"] + argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "a key the library lost" in err
    assert not list(tmp_path.iterdir())


def test_the_clis_names_match_the_package():
    from sigmadelta import config, models
    from sigmadelta.cli import parser
    from sigmadelta.runtime import registry

    assert parser.SCHEME_NAMES == config.SCHEMES and parser.SURROGATES == config.SURROGATES
    assert set(parser.MODELS) == set(models.names())
    assert all(models.kind(m) == "image" for m in parser.IMAGE_MODELS)
    assert all(models.kind(m) == "mnist" for m in parser.MNIST_MODELS)
    assert set(parser.BACKENDS) == set(registry.names())


def test_no_option_is_abbreviated(capsys):
    assert main(["run", "v.mp4", "--model", "squeezenet1_1", "--frame", "3"]) == 2
    assert "unrecognized arguments: --frame 3" in capsys.readouterr().err
