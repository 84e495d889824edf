"""Scales files (sigmadelta.files.scales): round trip, checks against a network, per-channel scales."""

import json

import pytest
import torch

import sigmadelta
from sigmadelta.errors import ScalesError
from sigmadelta.files import scales as sc
from sigmadelta.testing import residual_cnn


@pytest.fixture
def net(residual_net):  # tests/conftest.py
    return residual_net


def test_scales_round_trip_and_checks(net, tmp_path):
    path = tmp_path / "s.json"
    sc.save_scales(path, net, model="toy", meta={"lam": 1e-9})
    content = json.loads(path.read_text())
    assert content["model"] == "toy" and content["layers"] == list(net.scales) and content["meta"] == {"lam": 1e-9}
    other = sigmadelta.convert(residual_cnn(), torch.zeros(1, 3, 16, 16))
    assert sc.apply_scales(other, path, model="toy") == {"lam": 1e-9}
    assert other.scales == net.scales
    with pytest.raises(ScalesError, match="for model 'toy', not 'other'"):
        sc.load_scales(path, net, model="other")
    mlp = sigmadelta.convert(torch.nn.Sequential(torch.nn.Linear(4, 3)).eval(), torch.zeros(1, 4))
    with pytest.raises(ScalesError, match="does not fit this network's layers"):
        sc.load_scales(path, mlp)
    for text, match in (("{", "invalid JSON"), ('{"format": "x"}', "not a scales file"),
                        (json.dumps({**content, "scales": {**content["scales"], "stem": -1}}), "finite number > 0")):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(ScalesError, match=match):
            sc.load_scales(bad, net)
    with pytest.raises(FileNotFoundError):
        sc.load_scales(tmp_path / "missing.json")
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_per_channel_scales_round_trip(tmp_path):
    net = sigmadelta.convert(residual_cnn(), torch.zeros(1, 3, 16, 16), per_channel_scales=True)
    net.set_scales({name: torch.rand_like(k) + 0.5 for name, k in net.scales.items()})
    sc.save_scales(tmp_path / "s.json", net, model="toy")
    other = sigmadelta.convert(residual_cnn(), torch.zeros(1, 3, 16, 16), per_channel_scales=True)
    sc.apply_scales(other, tmp_path / "s.json")
    for name, k in net.scales.items():
        torch.testing.assert_close(other.scales[name], k)
