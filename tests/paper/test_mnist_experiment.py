"""`sigmadelta reproduce mnist --quick`: the Figure 4 / Appendix E pipeline end to end, on real MNIST."""

import json

import pytest

from sigmadelta.cli import main


@pytest.mark.slow
def test_reproduce_mnist_quick(tmp_path):
    assert main(["reproduce", "mnist", "--quick", "--out", str(tmp_path)]) == 0
    for name in ("figure4.png", "appendix_e.md", "results.json"):
        assert (tmp_path / name).stat().st_size > 0
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["rows"]
    keys = {"setting", "lambda", "network", "dataset", "split", "kops_per_sample", "class_error", "l1_error", "energy_nj"}
    assert all(keys <= set(r) for r in rows)
    assert {r["network"] for r in rows} == {"original-dense", "original-sparse", "rounding", "sigma-delta"}
    assert {(r["dataset"], r["split"]) for r in rows} == {(d, s) for d in ("mnist", "temporal-mnist")
                                                          for s in ("train", "test")}
    dense = [r for r in rows if r["network"] == "original-dense"]
    assert all(r["kops_per_sample"] == pytest.approx(397.19) for r in dense)

    def kops(network, dataset, lam):
        (r,) = [r for r in rows if r["setting"] == "optimized" and r["network"] == network
                and r["dataset"] == dataset and r["split"] == "test" and r["lambda"] == lam]
        return r["kops_per_sample"]

    for lam in results["config"]["lams"]:
        # on Temporal-MNIST the sigma-delta network is cheaper than the rounding one; on shuffled MNIST it is not
        assert kops("sigma-delta", "temporal-mnist", lam) < kops("rounding", "temporal-mnist", lam)
        assert kops("sigma-delta", "mnist", lam) > kops("rounding", "mnist", lam)
    assert results["summary"]["temporal-mnist"]["sigma_delta_reaches_original"]
