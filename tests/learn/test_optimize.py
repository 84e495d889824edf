"""Scale optimisation: the objective, its gradients, and what learned scales buy.

    .venv/bin/python -m pytest -q tests/test_optimize.py
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.func import functional_call

import sigmadelta
from sigmadelta.learn import minibatches
from sigmadelta.learn.optimize import _Scales, error_terms, optimize_scales, optimize_scales_sweep

LAMS = [10.0 ** e for e in (-7, -6, -5, -4, -3)]
FAST = dict(error="l2", lr=0.03, batch_size=10, progress=False)


def mlp(seed: int = 0, sizes=(16, 32, 32, 8), dtype=torch.float32) -> torch.nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        linear = torch.nn.Linear(n_in, n_out)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(n_out, n_in, generator=g) / n_in ** 0.5)
            linear.bias.copy_(0.1 * torch.randn(n_out, generator=g))
        layers += [linear, torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1]).eval().to(dtype)


def inputs(n: int = 200, features: int = 16, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(n, features, generator=torch.Generator().manual_seed(seed)).to(dtype)


def smooth_stream(steps: int = 120, streams: int = 4, features: int = 16, seed: int = 2) -> torch.Tensor:
    """A temporally correlated clip ``[T, B, features]``: slow sinusoids plus a small random walk."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(steps, dtype=torch.float32)[:, None, None]
    phase = 6.28 * torch.rand(1, streams, features, generator=g)
    freq = 0.02 + 0.03 * torch.rand(1, 1, features, generator=g)
    walk = 0.02 * torch.randn(steps, streams, features, generator=g).cumsum(0)
    return torch.sin(freq * t + phase) + walk


# ---------------------------------------------------------------------------------------------------------
# the trade-off


def test_larger_lambda_gives_fewer_ops_and_more_error():
    net = sigmadelta.convert(mlp(), inputs()[:1])
    finals = [h.final for h in optimize_scales_sweep(net, inputs(), LAMS, epochs=60, eval_every=None, **FAST)]
    ops = [f.ops_per_sample for f in finals]
    errors = [f.rel_error for f in finals]
    # strictly monotone; the sweep spans 4 decades of λ, so neighbours differ by far more than SGD noise
    assert all(a > b for a, b in zip(ops, ops[1:])), ops
    assert all(a < b for a, b in zip(errors, errors[1:])), errors
    assert ops[0] > 3 * ops[-1] and errors[-1] > 3 * errors[0]


def test_learned_scales_beat_unit_scales_on_the_objective():
    # objective per minibatch, paper normalization, averaged over an epoch: mean error + λ·B·(additions per sample)
    lam, batch = 1e-5, 10
    net = sigmadelta.convert(mlp(), inputs()[:1])
    history = optimize_scales(net, inputs(), lam, epochs=30, **FAST)
    start, end = history.evaluations[0], history.final
    assert start.scales == {name: 1.0 for name in net.quantizers}
    objective = [e.error + lam * batch * e.ops_per_sample for e in (start, end)]
    assert objective[1] < 0.7 * objective[0], objective
    assert net.scales == pytest.approx(end.scales)  # optimize_scales leaves the learned scales in the net


def test_sweep_equals_one_run_per_lambda():
    x = inputs(60)
    net = sigmadelta.convert(mlp(), x[:1])
    swept = optimize_scales_sweep(net, x, [1e-5, 1e-3], epochs=5, **FAST)
    assert net.scales == {name: 1.0 for name in net.quantizers}  # the sweep leaves the net's scales alone
    for lam, h in zip([1e-5, 1e-3], swept):
        alone = optimize_scales(sigmadelta.convert(mlp(), x[:1]), x, lam, epochs=5, **FAST)
        assert [e.scales for e in h.evaluations] == [pytest.approx(e.scales, rel=1e-4) for e in alone.evaluations]


def test_sweep_equals_one_run_per_lambda_on_clips():
    clip = smooth_stream(steps=30)
    net = sigmadelta.convert(mlp(), clip[0])
    kwargs = dict(cost="sigma_delta", error="l2", lr=0.03, epochs=3, batch_size=7, progress=False)
    swept = optimize_scales_sweep(net, clip, [1e-5, 1e-3], **kwargs)
    for lam, h in zip([1e-5, 1e-3], swept):
        alone = optimize_scales(sigmadelta.convert(mlp(), clip[0]), clip, lam, **kwargs)
        assert h.final.scales == pytest.approx(alone.final.scales, rel=1e-4)
        assert h.final.ops_per_sample == pytest.approx(alone.final.ops_per_sample, rel=1e-3)


def test_iterable_of_batches_equals_tensor():
    x = inputs(60)
    labelled = [(x[i:i + 10], torch.zeros(10)) for i in range(0, 60, 10)]  # (inputs, labels) pairs, as a loader gives
    runs = [optimize_scales(sigmadelta.convert(mlp(), x[:1]), data, 1e-4, epochs=3, eval_data=eval_data, **FAST)
            for data, eval_data in ((x, None), (labelled, [b for b, _ in labelled]))]
    assert runs[0].final.scales == pytest.approx(runs[1].final.scales, rel=1e-6)
    assert runs[0].final.ops_per_sample == runs[1].final.ops_per_sample


def test_normalizations_agree_when_lambda_is_rescaled_by_the_batch_size():
    x = inputs(60)  # 6 full minibatches of 10
    runs = [optimize_scales(sigmadelta.convert(mlp(), x[:1]), x, lam, normalization=norm, epochs=3, **FAST)
            for lam, norm in ((1e-4, "paper"), (1e-3, "mean"))]
    assert runs[0].final.scales == pytest.approx(runs[1].final.scales, rel=1e-5)


# ---------------------------------------------------------------------------------------------------------
# the computation term and its gradient


def _cost_and_grad(net, x):
    """The cost term of one minibatch at the net's scales, its gradient, and the quantizer inputs it saw."""
    net.set_mode("rounding")
    scales = _Scales(net, 1, x[:1])
    functional_call(net.graph_module, scales.per_row(len(x)), (x,))
    cost = scales.cost(None, 0)  # (1,)
    grads = torch.autograd.grad(cost.sum(), list(scales.kappa.values()))
    return scales, cost, dict(zip(scales.kappa, grads))


def test_cost_is_the_local_sum_of_scaled_activity_times_fanout():
    torch.manual_seed(0)
    x = inputs(20, dtype=torch.float64)
    net = sigmadelta.convert(mlp(dtype=torch.float64), x[:1])
    net.set_scales({"0": 2.0, "2": 0.5, "4": 3.0})
    scales, cost, grads = _cost_and_grad(net, x)
    fanout = {"0": 32, "2": 32, "4": 8}  # fully connected: n_out
    by_hand = {q: net.scales[q] * net.quantizers[q].observation.x.abs().sum().item() * fanout[q] for q in fanout}
    assert cost.item() == pytest.approx(sum(by_hand.values()), rel=1e-12)
    # local gradient: ∂C/∂κ_l = k_l Σ|x_l|·fanout_l, nothing from other layers' costs
    for q in fanout:
        assert grads[q].item() == pytest.approx(by_hand[q], rel=1e-12)


def test_cost_gradient_matches_a_finite_difference():
    x = inputs(20, dtype=torch.float64)
    net = sigmadelta.convert(mlp(dtype=torch.float64), x[:1], per_channel_scales=True)
    scales, cost, grads = _cost_and_grad(net, x)
    eps = 1e-6
    for q, kappa in scales.kappa.items():
        for c in (0, 3):  # two channels of each layer's scale vector
            with torch.no_grad():
                kappa[0, c] += eps
                up = scales.cost(None, 0).item()
                kappa[0, c] -= 2 * eps
                down = scales.cost(None, 0).item()
                kappa[0, c] += eps
            assert grads[q][0, c].item() == pytest.approx((up - down) / (2 * eps), rel=1e-6)


def test_sigma_delta_mode_gives_the_same_error_gradient_as_rounding_mode():
    # why cost="sigma_delta" may train in rounding mode: the two networks compute the same output
    clip = smooth_stream(steps=30).double()
    net = sigmadelta.convert(mlp(dtype=torch.float64), clip[0])
    net.set_scales({"0": 7.0, "2": 5.0, "4": 9.0})
    target = net.set_mode("original").run(clip).detach()
    grads = {}
    for mode in ("rounding", "sigma-delta"):
        net.set_mode(mode)
        loss = ((net.run(clip) - target) ** 2).sum()
        grads[mode] = torch.autograd.grad(loss, net.scale_parameters())
    for a, b in zip(grads["rounding"], grads["sigma-delta"]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------------------------------------
# options


@pytest.mark.parametrize("error", ["kl", "kl-probs", "l2", "l2-softmax", "l1", "l1-softmax"])
def test_each_error_measure_is_reduced_from_coarse_scales(error):
    model = mlp()
    if error == "kl-probs":
        model = torch.nn.Sequential(model, torch.nn.Softmax(-1)).eval()
    x = inputs(100)
    net = sigmadelta.convert(model, x[:1])
    net.set_scales({q: 0.5 for q in net.quantizers})  # coarse: large rounding error to remove
    h = optimize_scales(net, x, 0.0, error=error, lr=0.1, epochs=10, batch_size=10, progress=False)
    assert h.final.error < 0.7 * h.evaluations[0].error, (h.evaluations[0].error, h.final.error)
    assert h.final.rel_error < h.evaluations[0].rel_error


def test_kl_is_kl_of_approx_from_original():
    a, t = torch.randn(2, 5, 10), torch.randn(1, 5, 10)
    p, q = a.softmax(-1), t.softmax(-1)
    expected = (p * (p / q).log()).sum(-1)  # KL(approx ‖ original)
    torch.testing.assert_close(error_terms("kl")(a, t).sum(-1), expected)
    torch.testing.assert_close(error_terms("kl-probs")(p, q).sum(-1), expected)
    assert error_terms("kl")(t, t).abs().max() < 1e-6


def test_uniform_noise_learns_scales_near_those_of_rounding():
    x = inputs(100)
    torch.manual_seed(0)
    h = {noise: optimize_scales(sigmadelta.convert(mlp(), x[:1]), x, 1e-4, noise=noise, epochs=30, **FAST)
         for noise in ("round", "uniform")}
    for q, k in h["round"].final.scales.items():
        assert h["uniform"].final.scales[q] == pytest.approx(k, rel=0.3)


def test_per_channel_scales_are_learned_per_channel():
    x = inputs(100)
    net = sigmadelta.convert(mlp(), x[:1], per_channel_scales=True)
    h = optimize_scales(net, x, 1e-4, epochs=20, **FAST)
    assert [len(k) for k in h.final.scales.values()] == [16, 32, 32]
    assert all(net.scales[q].shape == (n,) for q, n in zip(net.quantizers, (16, 32, 32)))
    k = torch.tensor(h.final.scales["0"])
    assert k.std() > 0.05 * k.mean()  # the channels went their own ways
    objective = [e.error + 1e-4 * 10 * e.ops_per_sample for e in (h.evaluations[0], h.final)]
    assert objective[1] < objective[0]


def test_per_channel_conv_scales():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3),
                                torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5)).eval()
    x = torch.randn(20, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    net = sigmadelta.convert(model, x[:1], per_channel_scales=True)
    h = optimize_scales(net, x, 1e-5, error="kl", lr=0.01, epochs=2, batch_size=5, progress=False)
    assert [torch.tensor(k).shape for k in h.final.scales.values()] == [(3, 1, 1), (8, 1, 1), (144,)]
    assert h.final.ops_per_sample < h.evaluations[0].ops_per_sample


def test_evaluation_counts_match_the_network():
    x = inputs(50)
    net = sigmadelta.convert(mlp(), x[:1])
    h = optimize_scales(net, x, 1e-4, epochs=2, **FAST)
    net.set_mode("rounding")
    out = net(x)
    assert h.final.ops_per_sample == pytest.approx(net.op_counts().per_sample("rounding"), rel=1e-9)
    true = net.set_mode("original")(x)
    assert h.final.rel_error == pytest.approx(((out - true).abs().sum() / true.abs().sum()).item(), rel=1e-5)


def test_mode_backend_and_threads_are_restored():
    x = inputs(30)
    net = sigmadelta.convert(mlp(), x[:1])
    net.set_mode("sigma-delta").set_backend("events")
    threads = torch.get_num_threads()
    optimize_scales_sweep(net, x, [1e-4], epochs=1, num_threads=threads + 1, **FAST)
    assert net.mode == "sigma-delta" and net.backend == "events" and net.counting
    assert torch.get_num_threads() == threads
    assert all(p.requires_grad for p in net.scale_parameters())


def test_bad_arguments_are_refused_before_anything_changes():
    x = inputs(30)
    net = sigmadelta.convert(mlp(), x[:1])
    for kwargs, match in ((dict(lam=-1.0), "lam must be"), (dict(lam=math.nan), "lam must be"),
                          (dict(error="kl2"), "error must be one of"), (dict(cost="sd"), "cost must be one of"),
                          (dict(noise="gauss"), "noise must be one of"),
                          (dict(normalization="sum"), "normalization must be one of"), (dict(lr=0.0), "lr must be"),
                          (dict(epochs=1.5), "epochs must be an integer"), (dict(batch_size=True), "batch_size must"),
                          (dict(learning_rate=0.1), "unknown settings")):
        with pytest.raises(sigmadelta.ConfigError, match=match):
            optimize_scales(net, x, **({"lam": 1e-4} | kwargs), progress=False)
    with pytest.raises(ValueError, match=r"\[B, 16\]"):
        optimize_scales(net, x[:, :8], 1e-4, progress=False)
    with pytest.raises(ValueError, match=r"\[T, B, 16\]"):
        optimize_scales(net, x, 1e-4, cost="sigma_delta", progress=False)
    assert net.mode == "original" and net.scales == {q: 1.0 for q in net.quantizers}


# ---------------------------------------------------------------------------------------------------------
# the sigma-delta cost (beyond the paper)


def _sd_point(net, clip, scales) -> tuple[float, float]:
    """Relative error and sigma-delta additions per frame of ``net`` with ``scales`` on ``clip``."""
    true = net.set_mode("original").run(clip)
    net.set_scales(scales)
    out = net.set_mode("sigma-delta").run(clip)
    return ((out - true).abs().sum() / true.abs().sum()).item(), net.op_counts().per_sample("sigma_delta")


def test_sigma_delta_cost_reduces_sigma_delta_ops_on_a_smooth_stream():
    clip = smooth_stream()  # (120, 4, 16)
    net = sigmadelta.convert(mlp(), clip[0])
    net.set_scales({q: 5.0 for q in net.quantizers})  # fine: many additions to save
    h = optimize_scales(net, clip, 3e-4, cost="sigma_delta", error="l2", lr=0.03, epochs=15, batch_size=10,
                        progress=False)
    start, end = h.evaluations[0], h.final
    assert end.ops_per_sample < 0.5 * start.ops_per_sample  # sigma-delta additions per frame
    assert end.ops_per_sample == pytest.approx(_sd_point(net, clip, end.scales)[1], rel=1e-9)  # what the net counts


def test_each_cost_wins_on_its_own_objective():
    # same λ, same frames: scales trained on the sigma-delta cost reach a lower sigma-delta objective
    # J = mean error + λ·R·(sigma-delta additions per frame), R = 40 frames per minibatch, than the rounding-trained
    clip = smooth_stream()
    lam, window = 1e-4, 10
    sd = optimize_scales(sigmadelta.convert(mlp(), clip[0]), clip, lam, cost="sigma_delta", error="l2", lr=0.03,
                         epochs=15, batch_size=window, progress=False)
    rd = optimize_scales(sigmadelta.convert(mlp(), clip[0]), clip.flatten(0, 1), lam, error="l2", lr=0.03,
                         epochs=15, batch_size=window * clip.shape[1], progress=False)
    net = sigmadelta.convert(mlp(), clip[0])
    rows = window * clip.shape[1]
    objective = {}
    for name, h in (("sd", sd), ("rd", rd)):
        _, ops = _sd_point(net, clip, h.final.scales)
        objective[name] = h.final.error + lam * rows * ops  # the error is the same in both modes
    assert objective["sd"] < 0.8 * objective["rd"], objective
    # the Δ signal is cheaper, so the same λ penalises it less: larger scales
    assert all(sd.final.scales[q] > rd.final.scales[q] for q in net.quantizers)


def test_sigma_delta_cost_on_independent_clips():
    clips = [smooth_stream(steps=20, seed=s) for s in range(3)]
    net = sigmadelta.convert(mlp(), clips[0][0])
    h = optimize_scales(net, clips, 1e-3, cost="sigma_delta", error="l2", lr=0.03, epochs=3, progress=False)
    assert h.epochs == [0, 1, 2, 3] and h.final.ops_per_sample < h.evaluations[0].ops_per_sample
    # each clip starts from zero state: the counts are those of run() after reset(), clip by clip
    net.set_mode("sigma-delta")
    total = 0.0
    for clip in clips:
        net.reset()
        net.run(clip)
        total += net.op_counts().total("sigma_delta")
    assert h.final.ops_per_sample == pytest.approx(total / sum(c.shape[0] * c.shape[1] for c in clips), rel=1e-9)


# ---------------------------------------------------------------------------------------------------------
# data-parallel: under torchrun each process learns on its share of every minibatch


@pytest.mark.parametrize("world", [2, 3, 5])
@pytest.mark.parametrize("kind", ["samples", "one stream", "streams"])
def test_process_shares_cover_every_counted_row_once_with_its_reference(kind, world):
    # shares are slices of the minibatch (no arithmetic): exact comparisons are exact by construction
    temporal = kind != "samples"
    x = torch.arange(7 * 3 * 2.0).reshape(7, 3, 2) if temporal else torch.arange(14.0).reshape(7, 2)
    if kind == "one stream":
        x = x[:, :1]
    for context in ((0, 1) if temporal else (0,)):
        target = x[context:].flatten(0, 1) if temporal else x  # stands in for the original's outputs
        batch = minibatches.Batch(x, target, context)
        shares = [minibatches.share(batch, temporal, r, world) for r in range(world)]
        got = [s for s in shares if s is not None]
        assert sum(minibatches.rows(s, temporal) for s in got) == minibatches.rows(batch, temporal)
        by_stream = temporal and x.shape[1] >= world
        if by_stream:
            torch.testing.assert_close(torch.cat([s.target.unflatten(0, (7 - context, -1)) for s in got], 1),
                                       target.unflatten(0, (7 - context, -1)), rtol=0, atol=0)
        else:  # split by sample or by time step: in order
            torch.testing.assert_close(torch.cat([s.target for s in got]), target, rtol=0, atol=0)
        for s in got:
            if temporal:  # the counted steps are the inputs after the context, and their targets
                torch.testing.assert_close(s.x[s.context:].flatten(0, 1), s.target, rtol=0, atol=0)
                step = int(s.x[s.context, 0, 0]) // 6  # x[t, b, f] = 6t + 2b + f
                streams = (s.x[s.context, :, 0].long() % 6) // 2
                assert s.context == int(step > 0)  # the very first step is differenced against zero
                if s.context:  # else the step before it in the full window is its reference
                    torch.testing.assert_close(s.x[0], x[step - 1, streams], rtol=0, atol=0)
        assert all(s is None for s in shares[len(got):])  # the processes left without rows are the last


DDP_CASES = {  # learned on one process and on two: samples split unevenly, a stream split in time, streams split
    "samples": (lambda: inputs(30, dtype=torch.float64), dict(batch_size=7)),
    "one stream": (lambda: smooth_stream(40, streams=1).double(), dict(batch_size=5, cost="sigma_delta")),
    "streams": (lambda: smooth_stream(40, streams=3).double(), dict(batch_size=4, cost="sigma_delta")),
}


def learned_scales(case: str) -> dict[str, torch.Tensor]:
    data, settings = DDP_CASES[case]
    x = data()
    net = sigmadelta.convert(mlp(dtype=torch.float64), x.flatten(0, -2)[:1])
    optimize_scales(net, x, 3e-4, error="l2", lr=0.05, epochs=3, eval_every=None, progress=False, **settings)
    return {q: torch.as_tensor(k, dtype=torch.float64) for q, k in net.scales.items()}


DDP_SCRIPT = textwrap.dedent("""
    import sys, torch
    from sigmadelta._utils.distributed import init_distributed
    sys.path.insert(0, {tests!r})
    from test_optimize import DDP_CASES, learned_scales
    torch.set_num_threads(1)
    rank, world = init_distributed()
    scales = {{case: learned_scales(case) for case in DDP_CASES}}
    if rank == 0:
        torch.save(scales, sys.argv[1])
""")


def test_two_processes_under_torchrun_learn_the_scales_of_one(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=os.path.dirname(__file__)))
    out = tmp_path / "two.pt"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(out)], env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = torch.load(out, weights_only=True)
    for case in DDP_CASES:
        one = learned_scales(case)
        assert max(abs(math.log(k.item())) for k in one.values()) > 0.05, case  # learning moved them from k = 1
        for q, k in one.items():  # float64; only the order of summation differs (all-reduce of the shares)
            torch.testing.assert_close(two[case][q], k, rtol=1e-10, atol=0, msg=f"{case}: {q}")
