"""The random-network experiment (Figure 2): learned scales land on the Pareto front of random ones.

    .venv/bin/python -m pytest -q tests/test_random_net.py
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sigmadelta.paper import random_net


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("random_net")
    return out, random_net.run(out, quick=False, progress=False)  # the paper's configuration: a few seconds


def test_no_random_triple_beats_a_learned_end_point(results):
    # "beats": more than MARGIN = 5% lower in both error and additions per sample
    _, r = results
    errors, ops = np.array(r["random"]["error"]), np.array(r["random"]["ops"])
    assert len(errors) == 1000 and random_net.MARGIN == 0.05
    for p in r["learned"]:
        assert random_net.beaten_by((p["error"], p["ops"]), errors, ops) == 0, p["lam"]
    assert r["claim_holds"]


def test_the_check_has_teeth(results):
    # most random triples are beaten by other random triples: the same check fails for them
    _, r = results
    errors, ops = np.array(r["random"]["error"]), np.array(r["random"]["ops"])
    beaten = [random_net.beaten_by((e, c), errors, ops) > 0 for e, c in zip(errors, ops)]
    assert np.mean(beaten) > 0.5


def test_learned_end_points_trade_error_for_computation(results):
    _, r = results
    learned = r["learned"]
    assert [p["lam"] for p in learned] == pytest.approx([1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2])
    ops, errors = [p["ops"] for p in learned], [p["error"] for p in learned]
    assert all(a > b for a, b in zip(ops, ops[1:]))
    assert all(a < b for a, b in zip(errors, errors[1:]))
    # the learned scales undo the weight multipliers [0.5, 8, 0.25]: finer after the 0.5, coarser after the 8
    for p in learned[:-1]:
        k1, k2, k3 = p["scales"]
        assert k2 > k1 > k3
    # trajectories: one evaluation per epoch, from the common start k = 1
    for p in learned:
        t = p["trajectory"]
        assert t["epoch"] == list(range(201)) and t["scales"][0] == [1.0, 1.0, 1.0]


def test_outputs_are_written(results):
    out, r = results
    saved = json.loads((out / "results.json").read_text())
    assert saved["claim_holds"] == r["claim_holds"] and len(saved["learned"]) == 6
    assert (out / "results.md").read_text().startswith("| λ |")
    png = (out / "random_net.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000


def test_quick_mode(tmp_path):
    r = random_net.run(tmp_path, quick=True, progress=False)
    assert len(r["random"]["error"]) == random_net.QUICK["n_random"]
    assert r["learned"][0]["trajectory"]["epoch"] == list(range(0, 61, 3))
    assert r["claim_holds"]
