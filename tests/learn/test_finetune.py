"""Fine-tuning for the Sigma-Delta cost: config, training, determinism, checkpoints, resume, DDP, synthetic clips.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/learn/test_finetune.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import sigmadelta
from sigmadelta.config import FinetuneConfig, SchemeConfig
from sigmadelta.errors import CheckpointError, ConfigError, FinetuneError
from sigmadelta.files.checkpoints import apply_checkpoint, load_checkpoint, save_checkpoint
from sigmadelta.learn import finetune as ft
from sigmadelta.learn.finetune import finetune

HYSTERESIS = SchemeConfig("hysteresis", 1.0)


def tiny(dtype=torch.float32, seed=0):
    """A small MLP, converted with scales k = 8, and a slowly drifting 2-stream clip of 60 steps."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 24), torch.nn.ReLU(), torch.nn.Linear(24, 4)).to(dtype).eval()
    net = sigmadelta.convert(model, torch.zeros(1, 6, dtype=dtype))
    net.set_scales({n: 8.0 for n in net.scales})
    g = torch.Generator().manual_seed(seed + 1)
    clip = (torch.randn(60, 2, 6, generator=g, dtype=dtype) * 0.15).cumsum(0)
    return model, net, clip


def sd_ops_and_agreement(net, model, clip):
    net.set_mode("sigma-delta")
    with torch.no_grad():
        out = net.run(clip)
        ref = model(clip.flatten(0, 1)).unflatten(0, clip.shape[:2])
    ops = net.op_counts().per_sample("sigma_delta")
    net.set_mode("original")
    return ops, (out.argmax(-1) == ref.argmax(-1)).float().mean().item()


CFG = dict(steps=40, window=6, batch=4, lr_weights=3e-3, lr_scales=3e-2, checkpoint_every=10)


# ---------------------------------------------------------------------------------------------------------
# config


@pytest.mark.parametrize("bad", [dict(window=1), dict(batch=0), dict(lr_weights=-1.0), dict(error="mse"),
                                 dict(scheme=SchemeConfig("threshold", 0.1)), dict(surrogate="l0"), dict(steps=2.5),
                                 dict(temperature=0.0), dict(version=1), dict(lam_warmup=1.5),
                                 dict(train_biases=1), dict(scheme={"name": "hysteresis", "allocate_bands": 1})])
def test_config_refuses_bad_settings_naming_them(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        FinetuneConfig(**bad)


def test_config_round_trips_and_refuses_unknown_keys():
    cfg = FinetuneConfig(steps=7, surrogate="rounded", temperature=2.0, scheme=HYSTERESIS)
    assert FinetuneConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown settings"):
        FinetuneConfig.from_dict(cfg.to_dict() | {"learning_rate": 1})


def test_bad_input_is_refused_before_training():
    _, net, clip = tiny()
    with pytest.raises(FinetuneError, match="clip 0 is .*expected"):
        finetune(net, clip[..., :5], 1e-3, FinetuneConfig(**CFG), progress=False)
    with pytest.raises(FinetuneError, match="fewer than window"):
        finetune(net, [clip, clip[:3]], 1e-3, FinetuneConfig(**CFG), progress=False)
    with pytest.raises(FinetuneError, match="λ"):
        finetune(net, clip, float("nan"), FinetuneConfig(**CFG), progress=False)


# ---------------------------------------------------------------------------------------------------------
# training


def test_finetuning_cuts_sigma_delta_ops_on_held_out_frames_and_keeps_the_original_intact():
    model, net, clip = tiny()
    train, held_out = clip[:40], clip[40:]
    before_w = {n: m.weight.clone() for n, m in net.layers.items()}
    ops0, agree0 = sd_ops_and_agreement(net, model, held_out)
    result = finetune(net, train, 3e-4, FinetuneConfig(**(CFG | dict(steps=80))), progress=False)
    ops1, agree1 = sd_ops_and_agreement(net, model, held_out)
    assert ops1 < 0.7 * ops0, (ops0, ops1)  # measured (not surrogate) additions on frames not trained on
    assert agree1 >= agree0 - 0.1, (agree0, agree1)
    assert np.mean(result.record["cost"][-10:]) < np.mean(result.record["cost"][:10])
    assert any(not torch.equal(before_w[n], m.weight) for n, m in net.layers.items())  # the weights trained
    assert all(not p.requires_grad for n, p in net.graph_module.named_parameters() if "log_scale" not in n)
    # the teacher is the unmodified original: the model passed to convert is untouched
    assert torch.equal(model[0].weight, before_w["0"])


def test_lambda_zero_with_scales_only_distils_towards_the_original():
    model, net, clip = tiny()
    net.set_scales({n: 2.0 for n in net.scales})  # coarse: far from the original
    cfg = FinetuneConfig(**(CFG | dict(lr_weights=0.0, steps=60)))
    w = {n: m.weight.clone() for n, m in net.layers.items()}
    result = finetune(net, clip, 0.0, cfg, progress=False)
    assert all(torch.equal(w[n], m.weight) for n, m in net.layers.items())  # lr 0: weights unchanged
    assert np.mean(result.record["error"][-10:]) < 0.5 * np.mean(result.record["error"][:10])


def test_hysteresis_zero_trains_exactly_as_the_rounding_network():
    """h = 0 is the paper's network: training the Sigma-Delta network with hysteresis 0 (window by window, from
    zero state) gives the Rounding network's training, to float64 summation order (1e-9)."""
    runs = []
    for scheme in (SchemeConfig(), SchemeConfig("hysteresis", 0.0)):
        _, net, clip = tiny(torch.float64)
        result = finetune(net, clip, 1e-3, FinetuneConfig(**(CFG | dict(steps=15, scheme=scheme))), progress=False)
        runs.append(([m.weight for m in net.layers.values()] + net.scale_parameters(), result.record["loss"]))
    (w_round, loss_round), (w_hyst, loss_hyst) = runs
    assert np.allclose(loss_round, loss_hyst, rtol=1e-9, atol=0)
    assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-12) for a, b in zip(w_round, w_hyst))


def test_hysteresis_finetuning_trains_the_hysteresis_network_and_its_checkpoint_keeps_the_scheme(tmp_path):
    model, net, clip = tiny()
    train, held_out = clip[:40], clip[40:]
    net.set_scheme("hysteresis", h=1.0)
    ops0, agree0 = sd_ops_and_agreement(net, model, held_out)
    path = tmp_path / "h.pt"
    cfg = FinetuneConfig(**(CFG | dict(steps=80, scheme=HYSTERESIS)))
    result = finetune(net, train, 3e-5, cfg, model="toy", checkpoint=path, progress=False)
    assert net.scheme == "hysteresis" and set(net.scheme_params.values()) == {1.0}
    assert np.mean(result.record["cost"][-10:]) < np.mean(result.record["cost"][:10])
    ops1, agree1 = sd_ops_and_agreement(net, model, held_out)  # measured, on frames not trained on
    assert ops1 < 0.5 * ops0 and agree1 >= agree0 - 0.2, (ops0, ops1, agree0, agree1)  # 2.8x at -15 points
    fresh = sigmadelta.convert(model, torch.zeros(1, 6))
    apply_checkpoint(fresh, path, model="toy")  # the checkpoint names its scheme: the net runs it
    assert fresh.scheme == "hysteresis" and set(fresh.scheme_params.values()) == {1.0}
    for m in (net, fresh):
        m.set_mode("sigma-delta")
    with torch.no_grad():
        assert torch.equal(net.run(held_out), fresh.run(held_out))


def test_allocated_hysteresis_starts_from_the_allocation_and_its_checkpoint_keeps_each_h(tmp_path):
    """allocate_bands=True spreads h on the first training clip before training (with 0 steps the net holds exactly
    what allocate_bands gives), training keeps each quantizer's h, and the checkpoint gives them back."""
    model, net, clip = tiny()
    expected = sigmadelta.allocate_bands(_uniform_h(tiny()[1], 1.0), clip[:ft.ALLOCATION_FRAMES]).params
    cfg = FinetuneConfig(**(CFG | dict(scheme=HYSTERESIS.replace(allocate_bands=True))))
    finetune(net, clip, 1e-4, cfg.replace(steps=0), progress=False)
    assert net.scheme_params == expected and len(set(expected.values())) > 1
    _, net, _ = tiny()
    path = tmp_path / "a.pt"
    finetune(net, clip, 1e-4, cfg, model="toy", checkpoint=path, progress=False)
    assert net.scheme_params == expected  # the band in levels is kept while the weights and scales train
    fresh = sigmadelta.convert(model, torch.zeros(1, 6))
    apply_checkpoint(fresh, path, model="toy")
    assert fresh.scheme == "hysteresis" and fresh.scheme_params == expected


def _uniform_h(net, h):
    net.set_scheme("hysteresis", h=h)
    return net


@pytest.mark.parametrize("h", [0.0, 1.5])
def test_events_cost_is_the_tanh_of_levels_moved_over_one_plus_h_times_fan_out(h):
    """surrogate="events": Σ_l Σ_i tanh(k_l |Δx_{l,i}| / (1 + h)) · fanout_{l,i} per frame pair, computed by hand
    from the quantizers' inputs (float64, rel 1e-12); it is below the additions' surrogate, as events ≤ additions."""
    from sigmadelta.learn.objective import QuantizerTaps, input_fanouts

    _, net, clip = tiny(torch.float64)
    if h:
        net.set_scheme("hysteresis", h=h)
    window = clip[:5]
    fanout = input_fanouts(net, window[0, :1])
    taps = QuantizerTaps(net)
    try:
        with torch.no_grad(), net.configured(mode="rounding", counting=False):
            net.graph_module(window.flatten(0, 1))
        costs = {c: float(ft._surrogate_cost(net, taps.inputs, fanout, FinetuneConfig(window=5, surrogate=c)).detach())
                 for c in ("events", "scaled")}
        expected = 0.0
        for name, q in net.quantizers.items():
            kx = taps.inputs[name].unflatten(0, (5, -1)) * q.log_scale.detach().exp()
            moved = (kx[1:] - kx[:-1]).abs()
            expected += float((torch.tanh(moved / (1 + h)) * fanout[name]).sum()) / (4 * 2)
    finally:
        taps.remove()
    assert costs["events"] == pytest.approx(expected, rel=1e-12)
    assert 0 < costs["events"] < costs["scaled"]


def test_seeded_runs_are_identical_and_seeds_differ():
    runs = []
    for seed in (0, 0, 1):
        _, net, clip = tiny()
        finetune(net, clip, 1e-3, FinetuneConfig(**(CFG | dict(steps=15, seed=seed))), progress=False)
        runs.append([m.weight for m in net.layers.values()] + net.scale_parameters())
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], runs[2]))


def test_windows_are_uniform_over_clips_and_streams_and_stay_inside():
    clips = [torch.zeros(10, 2, 3), torch.zeros(30, 1, 3)]
    cfg = FinetuneConfig(window=5, batch=4000)
    picks = ft._windows(clips, cfg, 0)
    assert all(0 <= t <= len(clips[i]) - 5 and 0 <= b < clips[i].shape[1] for i, b, t in picks)
    share = np.mean([i == 0 for i, _, _ in picks])  # 12 of the 38 windows are in clip 0
    assert abs(share - 12 / 38) < 0.03


# ---------------------------------------------------------------------------------------------------------
# checkpoints


def test_checkpoint_loads_weights_only_and_reproduces_the_network(tmp_path):
    model, net, clip = tiny()
    path = tmp_path / "ft.pt"
    finetune(net, clip, 1e-3, FinetuneConfig(**(CFG | dict(steps=12))), model="toy", checkpoint=path, progress=False)
    content = torch.load(path, weights_only=True)
    assert content["model"] == "toy" and content["steps_done"] == 12 and len(content["record"]["loss"]) == 12
    assert FinetuneConfig.from_dict(content["config"]).steps == 12
    fresh = sigmadelta.convert(model, torch.zeros(1, 6))
    apply_checkpoint(fresh, path, model="toy")
    for m in (net, fresh):
        m.set_mode("sigma-delta")
    with torch.no_grad():
        assert torch.equal(net.run(clip), fresh.run(clip))  # same weights and scales: bit-identical
    assert not list(tmp_path.glob(".*tmp"))  # nothing half-written left behind
    with pytest.raises(CheckpointError, match="not 'other'"):
        apply_checkpoint(fresh, path, model="other")
    wider = sigmadelta.convert(torch.nn.Sequential(torch.nn.Linear(6, 4)).eval(), torch.zeros(1, 6))
    with pytest.raises(CheckpointError, match="does not fit"):
        apply_checkpoint(wider, path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a fine-tuning checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    cfg = FinetuneConfig(**(CFG | dict(steps=20)))
    _, whole, clip = tiny()
    finetune(whole, clip, 1e-3, cfg, progress=False)

    _, first, _ = tiny()
    path = tmp_path / "ck.pt"
    calls = {"n": 0}
    real = ft._gather

    def crash_at_step_15(*args):
        calls["n"] += 1
        if calls["n"] > 15:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(ft, "_gather", crash_at_step_15)
    with pytest.raises(KeyboardInterrupt):
        finetune(first, clip, 1e-3, cfg, checkpoint=path, progress=False)
    monkeypatch.setattr(ft, "_gather", real)
    assert load_checkpoint(path)["steps_done"] == 10  # the last checkpoint before the crash

    _, resumed, _ = tiny()  # a fresh copy of the original: the teacher
    result = finetune(resumed, clip, 1e-3, cfg, checkpoint=path, progress=False)
    assert result.steps_done == 20 and len(result.record["loss"]) == 20
    for a, b in zip(list(whole.graph_module.parameters()), list(resumed.graph_module.parameters())):
        assert torch.equal(a, b)
    with pytest.raises(FinetuneError, match="another run"):
        finetune(tiny()[1], clip, 2e-3, cfg, checkpoint=path, progress=False)


# ---------------------------------------------------------------------------------------------------------
# data-parallel: 2 processes under torchrun equal 1 process with the same global batch

DDP_SCRIPT = textwrap.dedent("""
    import sys, torch, sigmadelta
    from sigmadelta._utils.distributed import init_distributed
    from sigmadelta.config import FinetuneConfig
    from sigmadelta.learn.finetune import finetune
    sys.path.insert(0, {tests!r})
    from test_finetune import CFG, tiny
    torch.set_num_threads(1)
    rank, world = init_distributed()
    _, net, clip = tiny(torch.float64)
    finetune(net, clip, 1e-3, FinetuneConfig(**(CFG | dict(steps=8))), progress=False)
    if rank == 0:
        torch.save({{n: p.detach() for n, p in net.graph_module.named_parameters()}}, sys.argv[1])
""")


def test_two_processes_under_torchrun_equal_one_process(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=os.path.dirname(__file__)))
    out = tmp_path / "two.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(out)], env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = torch.load(out, weights_only=True)
    _, net, clip = tiny(torch.float64)
    finetune(net, clip, 1e-3, FinetuneConfig(**(CFG | dict(steps=8))), progress=False)
    one = dict(net.graph_module.named_parameters())
    moved = max((one[n] - tiny(torch.float64)[1].graph_module.get_parameter(n)).abs().max().item() for n in two)
    assert moved > 1e-3  # training did move the parameters
    # float64; the only difference is the order of summation of the batch's gradients (all-reduce of two halves)
    for n, p in two.items():
        torch.testing.assert_close(p, one[n].detach(), rtol=0, atol=1e-10)


def test_the_process_group_joined_is_left_at_exit(tmp_path):
    # gloo torn down during interpreter finalization can abort a process that exits with its group alive; exit
    # handlers run last-registered first, so one registered before init_distributed sees the state after its own
    script = tmp_path / "leave.py"
    script.write_text(textwrap.dedent("""
        import atexit, os, sys, torch.distributed as dist
        from pathlib import Path
        from sigmadelta._utils.distributed import init_distributed
        out = Path(sys.argv[1]) / f"rank{os.environ['RANK']}.txt"
        atexit.register(lambda: out.write_text(out.read_text() + f" at exit {dist.is_initialized()}"))
        rank, world = init_distributed()
        out.write_text(f"joined {rank} of {world}: {dist.is_initialized()}")
    """))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path)], env=dict(os.environ, OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in range(2):
        assert (tmp_path / f"rank{rank}.txt").read_text() == f"joined {rank} of 2: True at exit False"


# ---------------------------------------------------------------------------------------------------------
# synthetic clips


def test_synthetic_clips_are_deterministic_split_and_move():
    from sigmadelta.data import synthetic

    assert {s for s in synthetic.PHOTOS.values()} == {"train", "validation"}
    img = synthetic.photo("astronaut")
    assert img.dtype == np.uint8 and img.shape[2] == 3
    clips = {m: synthetic.motion_clip(img, m, frames=6, size=48, seed=3) for m in synthetic.MOTIONS}
    for m, c in clips.items():
        assert c.shape == (6, 48, 48, 3) and c.dtype == np.uint8, m
        assert np.array_equal(c, synthetic.motion_clip(img, m, frames=6, size=48, seed=3)), m
        assert np.abs(np.diff(c.astype(int), axis=0)).mean() > 0.1, m  # something changes every clip
    flick = clips["flicker"].astype(float).mean(axis=(1, 2, 3))
    assert flick.std() > 0.2  # brightness varies, the picture does not move
    obj = clips["object"].astype(int)
    assert (obj[1:] == obj[:-1]).all(-1).mean() > 0.5  # a static background: most pixels never change
    validation = synthetic.motion_clips("validation", frames=3, size=32, motions=("pan",))
    assert len(validation) == sum(s == "validation" for s in synthetic.PHOTOS.values())
    with pytest.raises(ValueError, match="unknown motion"):
        synthetic.motion_clip(img, "spin")


# ---------------------------------------------------------------------------------------------------------
# cached runs and the command line


def test_finetune_cached_trains_once_per_content(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGMADELTA_CACHE", str(tmp_path))
    model, net, clip = tiny()
    cfg = FinetuneConfig(**(CFG | dict(steps=6)))
    first = ft.finetune_cached(net, clip, 1e-3, cfg, model="toy", progress=False)
    again = tiny()[1]
    second = ft.finetune_cached(again, clip, 1e-3, cfg, model="toy", progress=False)
    assert not first.cached and second.cached and first.path == second.path
    assert all(torch.equal(a, b) for a, b in zip(net.graph_module.parameters(), again.graph_module.parameters()))
    other = ft.finetune_cached(tiny()[1], clip, 2e-3, cfg, model="toy", progress=False)  # another λ: trained
    assert not other.cached and other.path != first.path
    threads = torch.get_num_threads()
    try:  # another thread count rounds the sums another way: trained again, not reused
        torch.set_num_threads(threads + 1)
        assert not ft.finetune_cached(tiny()[1], clip, 1e-3, cfg, model="toy", progress=False).cached
    finally:
        torch.set_num_threads(threads)
    assert not list(tmp_path.rglob("*.partial"))


def test_cli_refuses_bad_finetune_and_checkpoint_arguments(tmp_path, capsys):
    from sigmadelta.cli import main

    assert main(["finetune", "--model", "nope", "-o", str(tmp_path / "x.pt")]) == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    out = str(tmp_path / "x.pt")
    assert main(["finetune", "--model", "mnist-mlp", "--scheme-param", "1", "-o", out]) == 2
    assert "--scheme-param is for --scheme hysteresis" in capsys.readouterr().err
    assert main(["finetune", "--model", "mnist-mlp", "--scheme", "hysteresis", "--scheme-param", "-1", "-o", out]) == 2
    assert "--scheme-param: must be a finite number >= 0" in capsys.readouterr().err
    assert main(["finetune", "--model", "mnist-mlp", "--allocate-bands", "-o", out]) == 2
    assert "--allocate-bands is for --scheme hysteresis" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
    assert main(["run", "clip.mp4", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "no checkpoint file" in capsys.readouterr().err
    assert main(["bench", "--data", "bikes"]) == 2
    assert "--model is required" in capsys.readouterr().err
    _, net, clip = tiny()
    path = tmp_path / "toy.pt"
    finetune(net, clip, 1e-3, FinetuneConfig(**(CFG | dict(steps=2))), model="toy", checkpoint=path, progress=False)
    assert main(["bench", "--model", "mnist-mlp", "--data", "mnist", "--checkpoint", str(path)]) == 2
    assert "checkpoint of model 'toy', not 'mnist-mlp'" in capsys.readouterr().err


@pytest.mark.parametrize("source", ["--checkpoint", "--scales"])
def test_cli_bench_runs_per_channel_scales_from_a_checkpoint_or_a_scales_file(tmp_path, source):
    import json

    from sigmadelta import data, models
    from sigmadelta.cli import main
    from sigmadelta.files.scales import save_scales

    bundle = models.get("mnist-mlp", progress=False)
    net = sigmadelta.convert(bundle.model, bundle.example_input(), per_channel_scales=True)
    gen = torch.Generator().manual_seed(0)
    net.set_scales({name: 2.0 + 30 * torch.rand(q.log_scale.shape, generator=gen)
                    for name, q in net.quantizers.items()})
    path, out = tmp_path / "per-channel", tmp_path / "bench.json"
    if source == "--checkpoint":
        save_checkpoint(path, net, model="mnist-mlp", config=FinetuneConfig(), lam=1e-6, record={}, steps_done=0)
    else:
        save_scales(path, net, "mnist-mlp")
    assert main(["bench", "--model", "mnist-mlp", source, str(path), "--data", "temporal-mnist", "--frames", "6",
                 "--repeats", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    for name, k in net.scales.items():  # converted per channel, the file's scales in it
        assert result["scales"][name] == pytest.approx(k.tolist(), rel=1e-6)
    frames, _ = data.mnist_clip("test", temporal=True, max_frames=6)
    with net.configured(mode="sigma-delta", counting=True, per_step_counts="total"), torch.no_grad():
        net.reset()
        net.run(frames)
        counts = net.op_counts()
    expected = counts.per_step("dense")[1:].sum() / counts.per_step("sigma_delta")[1:].sum()
    assert result["additions_ratio"] == pytest.approx(expected, rel=1e-9)  # the same network, counted the same way
