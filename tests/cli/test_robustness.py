"""Bad input of every kind: a clear error of the documented type, raised early, and nothing lost or half-written.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_robustness.py            # ~10 s
    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_robustness.py -m "not slow"

Property-based (Hypothesis, a few dozen examples each, tiny nets): malformed scales files, malformed streams and
malformed scale values are refused with a message that names what and where, and the network's state is left as it
was: the stream goes on bit-identically afterwards. Then the command line: output paths checked before any work,
outputs all or none with the umask's permissions, exit codes 2 and 130 without tracebacks; weights files; truncated
videos; the figures' legends.
"""

import json
import math
import os
import stat
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import sigmadelta
from sigmadelta import data
from sigmadelta.eval import plots, video
from sigmadelta.files import scales as sc
from sigmadelta._utils.files import atomic_write, atomic_write_all
from sigmadelta.cli import main
from sigmadelta.data import VideoError, VideoWarning
from sigmadelta.errors import StreamError
from sigmadelta.models import WeightsError, load_weights
from sigmadelta.testing import correlated_stream, mlp

FLOAT32 = torch.finfo(torch.float32)
SHAPE, BATCH = (4,), 2


def _net():
    torch.manual_seed(0)
    net = sigmadelta.convert(mlp((4, 5, 3)).double(), torch.zeros(1, 4, dtype=torch.float64))
    net.set_scales({name: 6.0 for name in net.scales})
    return net.set_mode("sigma-delta")


NET = _net()
STREAM = correlated_stream(6, SHAPE, batch=BATCH, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
REFERENCE = NET.run(STREAM)  # the uninterrupted stream
REFERENCE_COUNTS = NET.op_counts().to_dict()


def _assert_stream_goes_on(net, failing):
    """Run 3 steps, let ``failing()`` raise, run the rest: outputs and counts bit-identical to the reference."""
    net.reset()
    first = [net(frame) for frame in STREAM[:3]]
    failing()
    rest = [net(frame) for frame in STREAM[3:]]
    assert torch.equal(torch.stack(first + rest), REFERENCE)
    assert net.op_counts().to_dict() == REFERENCE_COUNTS


# ---------------------------------------------------------------------------------------------------------
# streams

BAD_FRAMES = st.one_of(
    st.tuples(st.integers(1, 3), st.integers(1, 6)).filter(lambda s: s != (BATCH, 4)).map(
        lambda s: (torch.zeros(s, dtype=torch.float64), "shape")),
    st.lists(st.integers(1, 4), min_size=0, max_size=3).filter(lambda s: len(s) != 2).map(
        lambda s: (torch.zeros(s, dtype=torch.float64), "shape")),
    st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool]).map(
        lambda dt: (torch.zeros(BATCH, 4, dtype=dt), "dtype")),
    st.tuples(st.integers(0, BATCH - 1), st.integers(0, 3), st.sampled_from([math.nan, math.inf, -math.inf])).map(
        lambda t: (torch.zeros(BATCH, 4, dtype=torch.float64).index_put_((torch.tensor(t[0]), torch.tensor(t[1])),
                                                                         torch.tensor(t[2], dtype=torch.float64)),
                   "NaN or inf")),
    st.sampled_from([1, 3, 5]).map(lambda b: (torch.zeros(b, 4, dtype=torch.float64), "streams")),
    st.sampled_from([[[0.0] * 4] * 2, None, "frame", np.zeros((2, 4))]).map(lambda x: (x, "torch.Tensor")),
)


@settings(max_examples=30)
@given(BAD_FRAMES)
def test_a_bad_frame_is_refused_and_the_stream_goes_on_bit_identically(bad):
    frame, words = bad

    def failing():
        with pytest.raises(StreamError, match=words):
            NET(frame)

    _assert_stream_goes_on(NET, failing)


@settings(max_examples=15)
@given(st.integers(1, 3), st.sampled_from([math.nan, math.inf]))
def test_a_clip_with_nan_or_inf_is_refused_whole_and_the_stream_goes_on(t, value):
    clip = STREAM[:t].clone()
    clip[-1, 0, 1] = value  # only the last step is bad: none of the clip may be taken

    def failing():
        with pytest.raises(StreamError, match=r"NaN or inf \(first at index \[\d+, 0, 1\]\); state left unchanged"):
            NET.run(clip)

    _assert_stream_goes_on(NET, failing)


# ---------------------------------------------------------------------------------------------------------
# scale values and scales files

BAD_SCALE_VALUES = st.one_of(
    st.booleans(), st.none(), st.text(max_size=5), st.just([]), st.just([[1.0], [2.0, 3.0]]),
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda k: not FLOAT32.tiny <= k <= FLOAT32.max),
    st.integers(max_value=0), st.just(10 ** 400), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.lists(st.booleans(), min_size=1, max_size=2),
)


@settings(max_examples=40)
@given(BAD_SCALE_VALUES, st.sampled_from(list(NET.scales)))
def test_a_malformed_scales_file_names_file_and_layer_and_changes_nothing(tmp_path_factory, value, layer):
    path = tmp_path_factory.mktemp("scales") / "bad.json"
    content = sc.scales_dict(NET, "toy")
    content["scales"][layer] = value
    path.write_text(json.dumps(content))

    def failing():
        with pytest.raises(sc.ScalesError) as info:
            sc.apply_scales(NET, path, "toy")
        assert str(path) in str(info.value) and repr(layer) in str(info.value)

    _assert_stream_goes_on(NET, failing)
    assert NET.scales == {name: 6.0 for name in NET.scales}


@settings(max_examples=30)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_a_scales_file_accepts_exactly_the_numbers_float32_can_hold_as_a_scale(tmp_path_factory, k):
    path = tmp_path_factory.mktemp("scales") / "s.json"
    content = sc.scales_dict(NET, "toy")
    content["scales"][next(iter(NET.scales))] = k
    path.write_text(json.dumps(content))
    if FLOAT32.tiny <= k <= FLOAT32.max:
        assert sc.read_scales_file(path)["scales"][next(iter(NET.scales))] == k
    else:
        with pytest.raises(sc.ScalesError, match="within float32's range"):
            sc.read_scales_file(path)


@pytest.mark.parametrize("text, words", [
    ("{not json", "invalid JSON"), ("[1, 2]", "not a scales file"), ('{"format": "other/1"}', "not a scales file"),
    ('{"format": "sigmadelta-scales/2", "model": "toy"}', "needs 'model'"), ("\udcff", "invalid JSON"),
])
def test_a_file_that_is_not_a_scales_file_says_so(text, words, tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(sc.ScalesError, match=words) as info:
        sc.read_scales_file(path)
    assert str(path) in str(info.value)


@settings(max_examples=30)
@given(st.one_of(BAD_SCALE_VALUES, st.just(torch.tensor([True])), st.just(torch.tensor(1 + 2j))),
       st.sampled_from(list(NET.scales)))
def test_set_scales_names_the_key_and_what_it_got_and_changes_nothing(value, layer):
    def failing():
        with pytest.raises((TypeError, ValueError)) as info:
            NET.set_scales({layer: value})
        assert f"scale {layer!r}" in str(info.value)
        if isinstance(info.value, TypeError):  # wrong type: the message names it
            assert type(value).__name__ in str(info.value)

    _assert_stream_goes_on(NET, failing)


def test_set_scales_refuses_unknown_names_and_non_mappings():
    with pytest.raises(KeyError, match="no quantizer named 'nope'"):
        NET.set_scales({"nope": 2.0})
    with pytest.raises(TypeError, match="takes a mapping .* got list"):
        NET.set_scales([2.0])


# ---------------------------------------------------------------------------------------------------------
# the command line: arguments, output paths, exit codes


def _assert_one_line_error(capsys, *words):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], err


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["--frames", "--chunk", "--epochs", "--calibrate-frames", "--lr", "--lam"]),
       st.one_of(st.integers(max_value=0).map(str), st.sampled_from(["nan", "inf", "-1e-3", "x", "", "1.5e"])))
def test_bad_numeric_arguments_exit_2_with_one_line(capsys, option, value):
    assume(not (option == "--lam" and value == "0"))  # λ = 0 is allowed
    assert main(["run", "video.mp4", "--model", "efficientnet-lite0", option, value]) == 2
    _assert_one_line_error(capsys, option)


def _no_work(monkeypatch):
    """Make any model loading fail the test: output checks must come first."""
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the output paths were checked")

    monkeypatch.setattr(sigmadelta.models, "get", forbidden)


@pytest.mark.parametrize("make, option, words", [
    (lambda d: ["--json", str(d)], "--json", "is a folder"),
    (lambda d: ["--plot", str(d)], "--plot", "is a folder"),
    (lambda d: ["--json", str(d / "file" / "r.json")], "--json", "is a file, not a folder"),
    (lambda d: ["--json", "/proc/sigmadelta-test/r.json"], "--json", "cannot create files in /proc"),
    (lambda d: ["--plot", str(d / "r.xyz")], "--plot", "matplotlib cannot write 'xyz'"),
    (lambda d: ["--json", str(d / "same"), "--plot", str(d / "same")], "--plot", "name the same file"),
])
def test_run_checks_every_output_path_before_any_work(make, option, words, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    _no_work(monkeypatch)
    before = sorted(tmp_path.rglob("*"))
    assert main(["run", str(tmp_path / "file"), "--model", "efficientnet-lite0"] + make(tmp_path)) == 2
    _assert_one_line_error(capsys, option, words)
    assert sorted(tmp_path.rglob("*")) == before


def test_optimize_and_reproduce_check_their_outputs_first(tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    (tmp_path / "file").write_text("x")
    assert main(["optimize", "--model", "efficientnet-lite0", "--calibrate", "carphone", "-o",
                 "/proc/sigmadelta-test/s.json"]) == 2
    _assert_one_line_error(capsys, "--output", "cannot create files")
    assert main(["reproduce", "random-net", "--out", str(tmp_path / "file")]) == 2
    _assert_one_line_error(capsys, "--out", "is a file, not a folder")
    assert main(["demo", "--synthetic", "--json", str(tmp_path)]) == 2
    _assert_one_line_error(capsys, "--json", "is a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_folder_is_refused_first(tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["optimize", "--model", "efficientnet-lite0", "--calibrate", "carphone", "-o",
                 str(locked / "sub" / "s.json")]) == 2
    _assert_one_line_error(capsys, "cannot create files in", "Permission denied")


def test_ctrl_c_exits_130_without_traceback_or_output(tmp_path, capsys, monkeypatch):
    import sigmadelta.eval.report

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sigmadelta.eval.report, "compare_networks", interrupted)
    assert main(["demo", "--synthetic", "--frames", "5", "--json", str(tmp_path / "d.json")]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_umask_permissions(umask, tmp_path):
    from sigmadelta._utils.files import write_json
    from sigmadelta.config import FinetuneConfig
    from sigmadelta.files.checkpoints import save_checkpoint

    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        sc.save_scales(tmp_path / "s.json", NET, "toy")
        save_checkpoint(tmp_path / "c.pt", NET, model="toy", config=FinetuneConfig(), lam=0.0, record={}, steps_done=0)
    finally:
        os.umask(old)
    for name in ("a.json", "s.json", "c.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_finetune_output_follows_the_umask(tmp_path):
    """`sigmadelta finetune -o F` writes F with the umask's mode, like every other output (the MLP and
    Temporal-MNIST come from the user cache, trained or derived once)."""
    old = os.umask(0o027)
    try:
        assert main(["finetune", "--model", "mnist-mlp", "--steps", "2", "--batch", "2", "-o",
                     str(tmp_path / "ft.pt")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "ft.pt").stat().st_mode) == 0o640


def test_outputs_are_written_all_or_none(tmp_path):
    def fails(tmp):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_all({tmp_path / "a.json": lambda tmp: open(tmp, "w").write("{}"), tmp_path / "b.png": fails})
    assert not list(tmp_path.iterdir())  # neither file, no temporary left
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "c.json", lambda tmp: (_ for _ in ()).throw(KeyboardInterrupt))
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------------
# weights files


def _weights_files(d):
    model = torch.nn.Linear(3, 2)
    torch.save(model.state_dict(), d / "ok.pth")
    whole = (d / "ok.pth").read_bytes()
    (d / "cut.pth").write_bytes(whole[: len(whole) // 2])
    (d / "random.pth").write_bytes(np.random.default_rng(0).bytes(3000))
    (d / "empty.pth").write_bytes(b"")
    with zipfile.ZipFile(d / "other.zip", "w") as z:
        z.writestr("notes.txt", "hello")
    torch.save(model, d / "pickled_model.pth")
    return model, {"cut.pth": "zip archive that ends early", "random.pth": "3,000-byte file of another kind",
                   "empty.pth": "empty file", "other.zip": "not a PyTorch file (it holds notes.txt)",
                   "pickled_model.pth": "pickled Python objects besides tensors"}


def test_a_truncated_or_foreign_weights_file_gets_one_clear_message(tmp_path):
    model, expected = _weights_files(tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for name, words in expected.items():
        with pytest.raises(WeightsError) as info:
            load_weights(model, tmp_path / name, "a toy model")
        message = str(info.value)
        assert "\n" not in message and str(tmp_path / name) in message and words in message, message
        assert "expected a file written by torch.save(model.state_dict(), path)" in message
        assert "weights_only" not in message  # never the advice to load a file of unknown origin unsafely
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    load_weights(model, tmp_path / "ok.pth", "a toy model")


# ---------------------------------------------------------------------------------------------------------
# truncated and corrupt videos, still images


def _video(path, n, size=(48, 64)):
    av = pytest.importorskip("av")
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.height, stream.width, stream.pix_fmt = *size, "yuv420p"
        for i in range(n):
            frame = np.full((*size, 3), (16 * i % 256, 255 - 8 * i, 100), np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


def test_a_truncated_video_keeps_its_frames_and_warns_where_it_ended(tmp_path):
    whole = _video(tmp_path / "whole.mp4", 30).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: int(len(whole) * 0.6)])
    frames = data.read_video(cut, strict=False)
    with pytest.warns(VideoWarning, match=r"cut\.mp4 is truncated: it ended at frame (\d+) but its index declares 30"):
        n = sum(1 for _ in frames)
    assert 0 < n < 30 and frames.truncated and frames.frames_read == n and frames.declared == 30
    assert f"the {n} decodable frames were used" in frames.problem
    with pytest.raises(VideoError, match=rf"ended at frame {n} "):
        list(data.read_video(cut))  # strict (the library's default)
    clean = data.read_video(tmp_path / "whole.mp4", strict=False)
    assert sum(1 for _ in clean) == 30 and not clean.truncated and clean.problem is None


def test_a_partly_corrupt_video_yields_what_decodes(tmp_path):
    damaged = bytearray(_video(tmp_path / "whole.mp4", 30).read_bytes())
    middle = len(damaged) // 2
    damaged[middle:middle + 300] = np.random.default_rng(0).bytes(300)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(damaged))
    frames = data.read_video(bad, strict=False)
    with pytest.warns(VideoWarning, match=r"bad\.mp4"):
        n = sum(1 for _ in frames)
    assert 0 < n <= 30 and frames.truncated and frames.frames_read == n
    with pytest.raises(VideoError, match=r"bad\.mp4: decoding failed at frame \d+"):
        list(data.read_video(bad))


def test_a_still_image_reads_as_one_frame_and_says_so(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "cat.png")
    frames = data.read_video(tmp_path / "cat.png", 10)
    assert len(list(frames)) == 1 and frames.still_image and not frames.truncated
    frames = data.read_video(_video(tmp_path / "v.mp4", 3))
    assert len(list(frames)) == 3 and not frames.still_image


@pytest.fixture(scope="module")
def lite0_scales(tmp_path_factory):
    bundle = sigmadelta.models.get("efficientnet-lite0")
    net = sigmadelta.convert(bundle.model, bundle.example_input())
    net.set_scales({name: 16.0 for name in net.scales})
    return sc.save_scales(tmp_path_factory.mktemp("lite0") / "scales.json", net, "efficientnet-lite0")


@pytest.mark.slow
def test_run_on_a_truncated_video_reports_it_and_strict_refuses_it(tmp_path, lite0_scales, capsys, monkeypatch):
    whole = _video(tmp_path / "whole.mp4", 10).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: int(len(whole) * 0.6)])
    out, plot = tmp_path / "out" / "r.json", tmp_path / "out" / "r.png"
    argv = ["run", str(cut), "--model", "efficientnet-lite0", "--scales", str(lite0_scales),
            "--json", str(out), "--plot", str(plot)]
    old = os.umask(0o027)
    try:
        assert main(argv) == 0
    finally:
        os.umask(old)
    report = json.loads(out.read_text())
    n = report["frames_read"]
    assert report["truncated"] is True and 0 < n < 10 and len(report["frames"]) == n == report["summary"]["frames"]
    err = capsys.readouterr().err
    assert f"cut.mp4 is truncated: it ended at frame {n} but its index declares 10 frames" in err
    assert "--strict makes this an error" in err and "Traceback" not in err
    assert {stat.S_IMODE(p.stat().st_mode) for p in (out, plot)} == {0o640}
    for p in (out, plot):
        p.unlink()
    assert main(argv + ["--strict"]) == 2
    _assert_one_line_error(capsys, "cut.mp4 is truncated")
    assert not list((tmp_path / "out").iterdir())
    # a figure that fails to render: the JSON is not written either
    monkeypatch.setattr(plots, "save_figure", lambda *a, **k: (_ for _ in ()).throw(OSError("no space left")))
    assert main(argv) == 2
    _assert_one_line_error(capsys, "no space left")
    assert not list((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_run_on_a_still_image_says_how_many_frames_were_asked_for(tmp_path, lite0_scales, capsys):
    from PIL import Image

    Image.fromarray(np.full((60, 80, 3), 120, np.uint8)).save(tmp_path / "cat.png")
    assert main(["run", str(tmp_path / "cat.png"), "--model", "efficientnet-lite0", "--scales", str(lite0_scales),
                 "--frames", "5", "--json", str(tmp_path / "r.json")]) == 0
    assert "holds a still image: 1 frame, fewer than the 5 asked for (--frames 5)" in capsys.readouterr().err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["still_image"] is True and report["frames_read"] == 1 and not report["truncated"]


# ---------------------------------------------------------------------------------------------------------
# figures


def _legend_covers_a_point(ax) -> bool:
    fig = ax.figure
    fig.canvas.draw()
    box = ax.get_legend().get_window_extent()
    for line in ax.get_lines():
        xy = ax.transData.transform(np.column_stack(line.get_data()))
        if np.any((xy[:, 0] >= box.x0) & (xy[:, 0] <= box.x1) & (xy[:, 1] >= box.y0) & (xy[:, 1] <= box.y1)):
            return True
    return False


def test_runs_plot_legends_cover_no_curve():
    net = sigmadelta.convert(mlp((4, 5, 3)), torch.zeros(1, 4))
    net.set_scales({name: 8.0 for name in net.scales})
    ev = video.evaluate_stream(net, correlated_stream(40, (4,), step_std=0.1), progress=False, per_layer=False)
    fig = plots.stream_figure(ev, title="toy")
    for ax in fig.axes:
        assert not _legend_covers_a_point(ax)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_mnist_figure_legend_names_the_lambdas_that_ran():
    from sigmadelta.paper import mnist

    rows = []
    for dataset in ("mnist", "temporal-mnist"):
        for network in ("original-dense", "original-sparse"):
            rows.append(dict(setting="original", network=network, dataset=dataset, split="test", kops_per_sample=400,
                             energy_nj=600, class_error=2.0, **{"lambda": None}))
        for network in ("rounding", "sigma-delta"):
            rows.append(dict(setting="unoptimized", network=network, dataset=dataset, split="test",
                             kops_per_sample=300, energy_nj=30, class_error=2.5, **{"lambda": None}))
            for i, lam in enumerate(mnist.QUICK["lams"]):
                rows.append(dict(setting="optimized", network=network, dataset=dataset, split="test",
                                 kops_per_sample=100 - 20 * i, energy_nj=10 - i, class_error=2 + i, **{"lambda": lam}))
    fig = mnist.figure4(rows)
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    for network in ("rounding", "sigma-delta"):
        assert f"{network} (λ = 1e-9 … 1e-6, 3 values)" in labels
    assert not any("1e-10" in label for label in labels)
    assert mnist.lam_range(mnist.LAMS) == "λ = 1e-10 … 1e-5, 10 values" and mnist.lam_range([1e-7]) == "λ = 1e-7"
    import matplotlib.pyplot as plt

    plt.close(fig)
