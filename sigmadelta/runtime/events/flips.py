"""How often two runs of one network disagree on a message: the float32 engine against the dense simulation.

A *flip* is a unit and frame where one run sent a message and the other did not: in float32 a unit whose ``k x``
lands within float32 rounding of a level boundary takes the other level. With the paper's rounding the next visit
of the unit undoes it; with hysteresis or thresholds it can stay until the unit next moves.
"""

from __future__ import annotations

import torch

__all__ = ["message_mismatch"]


@torch.no_grad()
def message_mismatch(reference, other, frames: torch.Tensor, chunk: int = 16, cast: bool = False) -> dict:
    """Run ``frames [T, B, ...]`` through two networks of one model (say the dense simulation and the event
    engine), counting ops, ``chunk`` frames at a time, from new streams (both are reset first), and compare what
    every quantizer sent. With ``cast`` each network gets the frames in its own dtype (a float64 and a float32 copy
    of one model).

    Returns:
        ``rate`` (flips / unit-frames over every quantizer), ``flips``, ``unit_frames``, ``first_flip_frame``
        (``None`` if none), ``per_quantizer`` (flips per quantizer name, where any) and ``outputs``
        (``(reference, other)``, each ``[T, B, ...]``).
    """
    flips, units, first = {}, 0, None
    outs = ([], [])
    reference.reset()
    other.reset()
    for start in range(0, len(frames), chunk):
        piece = frames[start:start + chunk]
        for net, out in zip((reference, other), outs):
            with net.configured(counting=True):
                out.append(net.run(piece.to(net.dtype) if cast else piece))
        mine, theirs = reference.observations(), other.observations()
        for name, obs in mine.items():
            moved = (obs.s != 0).flatten(1)  # (t·B, units)
            differ = moved != (theirs[name].s != 0).flatten(1)
            count = int(differ.sum())
            units += moved.numel()
            if count:
                flips[name] = flips.get(name, 0) + count
                frame = start + int(differ.any(1).nonzero()[0]) // piece.shape[1]
                first = frame if first is None else min(first, frame)
    total = sum(flips.values())
    return {"rate": total / max(units, 1), "flips": total, "unit_frames": units, "first_flip_frame": first,
            "per_quantizer": flips, "outputs": (torch.cat(outs[0]), torch.cat(outs[1]).to(outs[0][0].dtype))}
