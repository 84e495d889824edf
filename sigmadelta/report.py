"""Run a converted network as all four networks on one stream and tabulate what each costs.

Plain data out (:func:`compare_networks`), text out (:func:`format_layer_table`): the CLI prints one and
writes the other as JSON.
"""

from __future__ import annotations

import torch

from .modules import MODES
from .net import SigmaDeltaNet
from .stream import run_stream

__all__ = ["compare_networks", "format_layer_table"]

COLUMNS = (("dense", "original (dense)"), ("sparse", "original (sparse)"), ("rounding", "rounding"),
           ("sigma_delta", "sigma-delta"))


@torch.no_grad()
def compare_networks(net: SigmaDeltaNet, clip: torch.Tensor, labels: torch.Tensor | None = None,
                     chunk: int = 256) -> dict:
    """Run ``clip`` ``[T, B, ...]`` through all four networks, in clip mode, ``chunk`` steps at a time.

    Returns a JSON-ready dict: per network its ops per sample (per layer too), energy, output error against
    the original (mean |Δ| / mean |original|), agreement of the argmax with the original's, class error if
    ``labels`` ``[T, B]`` are given, and the two exactness checks (max |TD − original|, max |SD − rounding|).
    """
    chunks: dict[str, list[torch.Tensor]] = {mode: [] for mode in MODES}
    counts = run_stream(net, clip, MODES, chunk=chunk,
                        on_chunk=lambda _, out, nets: [chunks[m].append(o) for m, o in out.items()])
    outputs = {mode: torch.cat(c) for mode, c in chunks.items()}
    original = outputs["original"]
    sd = counts["sigma-delta"]
    result = {
        "steps": int(clip.shape[0]),
        "streams": int(clip.shape[1]),
        "layers": list(sd.layers),
        "dtype": str(net.dtype).removeprefix("torch."),
        "networks": {},
        "checks": {
            "max_abs_temporal_difference_vs_original": (outputs["temporal-difference"] - original).abs().max().item(),
            "max_abs_sigma_delta_vs_rounding": (outputs["sigma-delta"] - outputs["rounding"]).abs().max().item(),
        },
    }
    ops_source = {"dense": counts["original"], "sparse": counts["original"], "rounding": counts["rounding"],
                  "sigma_delta": sd}
    out_of = {"dense": "original", "sparse": "original", "rounding": "rounding", "sigma_delta": "sigma-delta"}
    for kind, _ in COLUMNS:
        c, out = ops_source[kind], outputs[out_of[kind]]
        entry = {
            "ops_per_sample": c.per_sample(kind),
            "ops_per_sample_by_layer": {k: v / (c.steps * c.batch_size) for k, v in c.per_layer(kind).items()},
            "energy_nj_per_sample_int32": c.energy_nj(kind, per_sample=True),
            "output_error": ((out - original).abs().mean() / original.abs().mean().clamp_min(1e-30)).item(),
            "argmax_agreement": (out.argmax(-1) == original.argmax(-1)).double().mean().item(),
        }
        if labels is not None:
            entry["class_error_percent"] = 100.0 * (out.argmax(-1) != labels).double().mean().item()
        result["networks"][kind] = entry
    return result


def format_layer_table(result: dict) -> str:
    """A per-layer table of ops per sample for the four networks, with reduction factors against dense."""
    nets = result["networks"]
    head = f"{'layer':<24}" + "".join(f"{title:>19}" for _, title in COLUMNS) + f"{'dense / SD':>12}"
    lines = [head, "-" * len(head)]
    for layer in result["layers"]:
        row = [nets[kind]["ops_per_sample_by_layer"][layer] for kind, _ in COLUMNS]
        lines.append(f"{layer:<24}" + "".join(f"{v:>19,.0f}" for v in row) + f"{_ratio(row[0], row[3]):>12}")
    lines.append("-" * len(head))
    totals = [nets[kind]["ops_per_sample"] for kind, _ in COLUMNS]
    lines.append(f"{'total ops / sample':<24}" + "".join(f"{v:>19,.0f}" for v in totals)
                 + f"{_ratio(totals[0], totals[3]):>12}")
    lines.append(f"{'energy nJ / sample':<24}" + "".join(f"{nets[k]['energy_nj_per_sample_int32']:>19,.1f}"
                                                         for k, _ in COLUMNS) + "   (int32)")
    lines.append(f"{'reduction vs dense':<24}" + "".join(f"{_ratio(totals[0], v):>19}" for v in totals))
    lines.append(f"{'output error':<24}" + "".join(f"{nets[k]['output_error']:>19.4f}" for k, _ in COLUMNS))
    lines.append(f"{'argmax = original':<24}" + "".join(f"{nets[k]['argmax_agreement']:>19.2%}" for k, _ in COLUMNS))
    if "class_error_percent" in nets["dense"]:
        lines.append(f"{'class error':<24}" + "".join(f"{nets[k]['class_error_percent']:>18.2f}%" for k, _ in COLUMNS))
    checks = result["checks"]
    lines.append("")
    lines.append(f"exact ({result['dtype']}): max|temporal-difference - original| = "
                 f"{checks['max_abs_temporal_difference_vs_original']:.2e}, max|sigma-delta - rounding| = "
                 f"{checks['max_abs_sigma_delta_vs_rounding']:.2e}"
                 + ("  (float32: rounding-boundary flips possible; exact to ~1e-12 in float64)" if result["dtype"] == "float32" else ""))
    return "\n".join(lines)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b > 0 else "inf"
