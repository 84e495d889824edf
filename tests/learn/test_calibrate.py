"""Calibration with a cache (sigmadelta.learn.calibrate) and each model's default λ (sigmadelta.recipes)."""

import pytest
import torch

import sigmadelta
from sigmadelta import recipes
from sigmadelta.learn import calibrate as sc
from sigmadelta.testing import correlated_stream


@pytest.fixture
def net(residual_net):  # tests/conftest.py
    return residual_net


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
    assert first[0].meta["config"] == recipes.PAPER_VIDEO.replace(lr=0.05, epochs=1, init_scale=None, lam=1e-6).to_dict()
    with pytest.raises(sigmadelta.ConfigError, match="unknown settings"):
        sc.calibrate_sweep(net, frames, [1e-3], model="toy", momentum=0.9)
    with pytest.raises(sigmadelta.ConfigError, match="lr must be"):
        sc.calibrate_sweep(net, frames, [1e-3], model="toy", lr=-0.1)
    # the paper's recipe starts every scale at k = 16, whatever the net holds
    net.set_scales({name: 2.0 for name in net.scales})
    paper = sc.calibrate_sweep(net, frames, [1e-3], model="toy", epochs=1, lr=0.05, progress=False, cache=False)
    assert paper[0].meta["init"] == {name: 16.0 for name in net.scales}


def test_default_lam():
    assert recipes.scale_lam("vgg19") == 1e-11  # the paper's
    assert recipes.scale_lam("efficientnet-lite0") == recipes.SCALE_LAMS["efficientnet-lite0"]
    assert recipes.scale_lam("a model of the user's") == 1e-11
