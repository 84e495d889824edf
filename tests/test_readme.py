"""The README tells the truth: its code runs and prints what it shows, its numbers are those of the committed result
files it links to, and its links (and the docs') lead somewhere."""

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
RESULTS = "experiments/oconnor2017/results/"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_the_readme_is_short():
    assert len(README.splitlines()) <= 150


def test_the_quickstart_runs_and_prints_what_the_readme_shows():
    (code,), (shown,) = _blocks("python"), _blocks("text")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue() == shown


def _load(relpath: str) -> dict:
    return json.loads((ROOT / relpath).read_text(encoding="utf-8"))


def _demo(d: dict) -> list[str]:
    n = d["networks"]
    dense, sd = n["dense"]["ops_per_sample"], n["sigma_delta"]["ops_per_sample"]
    return [f"{100 * d['model_info']['test_accuracy']:.2f}% test accuracy", f"{dense:,.0f} dense ops",
            f"{sd:,.0f} Sigma-Delta additions per digit ({dense / sd:.1f}x fewer)",
            f"class error {n['sigma_delta']['class_error_percent']:.2f}% against the original's "
            f"{n['dense']['class_error_percent']:.2f}%", f"scales λ = {d['lam']:g}"]


def _mnist(d: dict) -> list[str]:
    best = d["summary"]["temporal-mnist"]["fewest_sigma_delta_kops_within_0p3"]
    return [f"{best['kops_per_sample']:.1f} k per digit, {best['reduction_vs_dense_ops']:.1f}x fewer than the dense ops, "
            f"at {best['class_error']:.2f}% class error"]


def _finetune(d: dict) -> list[str]:
    row = next(r for r in d["mnist"]["rows"] if r["lam"] == 3e-6)
    return [f"(λ = {row['lam']:g})", f"{row['kops_per_digit']:.1f} k additions per digit at {row['class_error']:.2f}% "
            "class error"]


def _schemes(d: dict) -> list[str]:
    t = d["targets"]["testMovie"]
    paper = next(r for r in d["rows"] if r["label"] == t["paper"])["clips"]["testMovie"]
    return [f"{d['clips']['testMovie']['frames']} frames", f"{t['ours_reduction_events']:.2f}x fewer events at "
            f"{100 * t['ours_top1']:.1f}% top-1", f"tuned thresholds {t['baseline_reduction_events']:.2f}x",
            f"every {t['ours_skip_n']}th frame, the same ops: {100 * t['ours_skip_top1']:.1f}%",
            f"paper's scheme {t['paper_reduction_additions']:.2f}x fewer additions at {100 * paper['top1']:.1f}%"]


def _bench(d: dict) -> list[str]:
    agree = d["top1_agreement"]
    texts = [f"{d['speedup']:.2f}x faster than dense PyTorch", f"{d['events_ratio']:.1f}x fewer events",
             f"top-1 agreement {100 * agree['engine']:.1f}%", f"{d['threads']} thread", f"({d['speedup_nchw']:.2f}x NCHW)"]
    if "mnist" in d["clip"]:
        texts.append(f"every {d['frame_skipping_every']}th digit, the same time: {100 * agree['frame_skipping']:.1f}%")
    return texts


ROWS = {RESULTS + "demo/demo.json": _demo, RESULTS + "mnist/results.json": _mnist,
        RESULTS + "finetune/results.json": _finetune, RESULTS + "schemes/results_squeezenet1_1.json": _schemes,
        "benchmarks/results/events_squeezenet_jwpIntro_threads1.json": _bench,
        "benchmarks/results/events_mlp_wide_temporal_mnist_threads1.json": _bench}


@pytest.mark.parametrize("relpath", ROWS)
def test_the_results_table_quotes_its_files(relpath):
    row = next(line for line in README.splitlines() if line.startswith("|") and f"({relpath})" in line)
    for text in ROWS[relpath](_load(relpath)):
        assert text.replace("e-08", "e-8").replace("e-06", "e-6") in row, (text, row)


def test_every_row_of_the_results_table_is_checked():
    rows = [line for line in README.splitlines() if line.startswith("| ") and "results/" in line]
    linked = {re.search(r"\]\(([\w./-]+\.json)\)", row).group(1) for row in rows}
    assert linked == set(ROWS)


@pytest.mark.parametrize("page", ["README.md", *[f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md"))]])
def test_every_relative_link_leads_somewhere(page):
    text = (ROOT / page).read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert ((ROOT / page).parent / target).exists(), f"{page}: {target}"
