"""Shared pytest setup: a seeded, deadline-free Hypothesis profile (CI runs must be repeatable), one torch thread,
and a fixture for an empty user cache."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, deadline=None, max_examples=20, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# One intra-op thread for the whole suite (every test file relies on it): the models here are tiny, and two-thread
# parallel regions stall on a busy 2-core machine (tiny convolutions take ~100 ms instead of ~0.2 ms).
torch.set_num_threads(1)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty user cache for the test (scales, checkpoints learned in it are its own), with the clips that
    `make install` fetched still found where they are."""
    from sigmadelta import data

    monkeypatch.setenv(data.CLIPS_ENV, str(data.clips_dir()))
    monkeypatch.setenv("SIGMADELTA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def residual_net():
    """A small residual CNN (depthwise convs, folded BatchNorm, ReLU6, padding, residual adds), converted, k = 8."""
    import sigmadelta
    from sigmadelta.testing import residual_cnn

    torch.manual_seed(0)
    net = sigmadelta.convert(residual_cnn(), torch.zeros(1, 3, 16, 16))
    net.set_scales({name: 8.0 for name in net.scales})
    return net
