"""Text reports: the four networks on one stream (:func:`compare_networks`, plain data; :func:`format_layer_table`,
text), and a video stream's evaluation on one screen (:func:`format_summary`). The CLI prints the text and writes
the data as JSON.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.modules import MODES
from ..net import SigmaDeltaNet
from .metrics import agreement
from .stream import run_stream
from .video import StreamEvaluation

__all__ = ["compare_networks", "format_layer_table", "format_summary", "format_judged"]

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
            "argmax_agreement": agreement(out, original)[0].double().mean().item(),
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


# ---------------------------------------------------------------------------------------------------------
# a video stream's evaluation, on one screen


def format_summary(ev: StreamEvaluation, classes: list[str] | None = None, title: str = "",
                   segments: dict[str, tuple[int, int]] | None = None) -> str:
    """A one-screen summary: per segment (default: the whole stream) ops per frame of the three networks,
    the reduction, energy and agreement; then the classes of a few frames."""
    segments = segments or {"all frames": (0, ev.frames)}
    lines = [title] if title else []
    head = (f"{'':<22}{'original ops':>14}{'rounding ops':>14}{'additions':>12}{'reduction':>11}"
            f"{'hybrid':>9}{'events':>12}{'reduction':>11}{'energy nJ (add.)':>18}{'top-1':>8}{'top-5':>8}")
    lines += [head, "-" * len(head)]
    for name, (a, b) in segments.items():
        s = ev.summary(a, b)
        label = f"{name} ({s['frames']})"
        lines.append(f"{label:<22}{s['ops_original_per_frame']:>14.4g}"
                     f"{s['ops_rounding_per_frame']:>14.4g}{s['ops_sigma_delta_per_frame']:>12.4g}"
                     f"{s['reduction']:>10.2f}x{s['reduction_hybrid']:>8.2f}x"
                     f"{s['ops_sigma_delta_events_per_frame']:>12.4g}{s['reduction_events']:>10.2f}x"
                     f"{s['energy_nj_per_frame']['sigma_delta']:>18,.0f}"
                     f"{s['top1_agreement']:>8.1%}{s['top5_agreement']:>8.1%}")
    lines.append(f"(scheme {ev.scheme}; additions: the paper's count, |n| per message n and connection; events: "
                 f"2 ops per nonzero message and connection; reduction = original / that)")
    lines.append(f"(ops per frame; reduction = original / sigma-delta; hybrid: the same when each layer falls "
                 f"back to dense on frames where that is cheaper; energy int32, original "
                 f"{ev.summary()['energy_nj_per_frame']['original']:,.0f} nJ/frame; agreement with the original)")
    for name, (a, b) in segments.items():
        lines += format_judged(ev.judged(a, b), f"{name}: " if len(segments) > 1 else "",
                               len(range(*slice(a, b).indices(ev.frames))) * ev.original_top5.shape[1])
    if classes is not None:
        picks = sorted(set(np.linspace(0, ev.frames - 1, min(4, ev.frames)).round().astype(int).tolist()))
        for t in picks:
            o, s = ev.original_top5[t, 0, 0], ev.sigma_delta_top5[t, 0, 0]
            mark = "=" if o == s else "≠"
            lines.append(f"frame {t:>5}: original {_short(classes[o])!r} {mark} sigma-delta {_short(classes[s])!r}")
    return "\n".join(lines)


def _short(name: str) -> str:
    return name.split(",")[0]


def format_judged(j: dict, prefix: str = "", frames: int | None = None) -> list[str]:
    """Three lines from :meth:`StreamEvaluation.judged` (over ``frames`` frames): agreement on the decisive frames,
    the frame skipper at the network's cost, the change latency of both."""
    from .decisive import DECISIVE

    pct = lambda v: "n/a" if v is None else f"{v:.1%}"
    lines = []
    if j["decisive_frames"] is not None:
        lines.append(f"{prefix}decisive frames (the original's top-1 survives ±{DECISIVE['level']:g} grey levels of "
                     f"noise, {DECISIVE['draws']} draws): {j['decisive_frames']}"
                     + ("" if frames is None else f" of {frames}") + f"; agreement there: top-1 "
                     f"{pct(j['top1_agreement_decisive'])}, top-5 {pct(j['top5_agreement_decisive'])}")
    skip = j["frame_skip"]["events"]
    lines.append(f"{prefix}frame skipping at the same ops (events): the original on {_every(skip['n'])}, "
                 f"answer held ({skip['reduction']:.2f}x fewer ops): top-1 {pct(skip['top1_agreement'])}, top-5 "
                 f"{pct(skip['top5_agreement'])}" + ("" if j["decisive_frames"] is None else
                                                      f", decisive top-1 {pct(skip['top1_agreement_decisive'])}"))
    lat = j["change_latency"]
    if lat["changes"]:
        def follow(v):
            return (f"{v['mean_frames']:.2f} frames" + (f" ({v['missed']} never followed)" if v["missed"] else "")
                    + f", top-1 {pct(v['agreement_after'])} on the 3 frames after")
        lines.append(f"{prefix}change latency ({lat['changes']} lasting changes of the original's answer): "
                     f"sigma-delta {follow(lat['sigma_delta'])}; frame skipping {follow(lat['frame_skip'])}")
    else:
        lines.append(f"{prefix}change latency: the original's answer never changes for 3 frames or more")
    return lines


def _every(n: int) -> str:
    """``"every frame"``, ``"every 2nd frame"``, ``"every 21st frame"``, ..."""
    if n == 1:
        return "every frame"
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"every {n}{suffix} frame"


