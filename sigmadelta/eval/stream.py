"""The evaluation core: one stream through a converted network run as several of its networks side by side.

:func:`run_stream` is the one place that runs and counts; :func:`sigmadelta.eval.report.compare_networks` (the four
networks on a clip), :func:`sigmadelta.eval.video.evaluate_stream` (the original and the chosen scheme on a video)
and the benchmark's reference pass only format what it gives them.

>>> import torch, sigmadelta
>>> from sigmadelta.eval.stream import run_stream
>>> net = sigmadelta.convert(torch.nn.Sequential(torch.nn.Linear(4, 3)).eval(), torch.zeros(1, 4))
>>> _ = net.set_scales({"0": 8.0})
>>> outs = []
>>> counts = run_stream(net, torch.rand(6, 1, 4), ("original", "sigma-delta"), chunk=4,
...                     on_chunk=lambda clip, out, nets: outs.append(out))
>>> len(outs), counts["sigma-delta"].steps, sorted(outs[0])
(2, 6, ['original', 'sigma-delta'])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch

from ..accounting import OpCounts
from ..core.modules import MODES, ORIGINAL
from ..net import SigmaDeltaNet

__all__ = ["run_stream", "chunks_of"]

OnChunk = Callable[[torch.Tensor, dict[str, torch.Tensor], dict[str, SigmaDeltaNet]], None]


def chunks_of(frames: torch.Tensor, chunk: int) -> Iterator[torch.Tensor]:
    """Cut a clip ``[T, B, ...]`` into clips of at most ``chunk`` steps (views, no copy)."""
    for i in range(0, len(frames), chunk):
        yield frames[i:i + chunk]


@torch.no_grad()
def run_stream(net: SigmaDeltaNet, frames: torch.Tensor | Iterable[torch.Tensor], modes: Sequence[str], *,
               chunk: int = 16, reference: SigmaDeltaNet | None = None, per_step_counts: str | None = None,
               on_chunk: OnChunk | None = None, progress=None) -> dict[str, OpCounts]:
    """Run one stream through ``net`` as each of ``modes``, side by side, chunk by chunk, counting ops.

    Every network starts from zero state and is never reset again (clips one after the other are one stream).
    The first mode that is not ``"original"`` runs on ``net`` itself, with its scales, scheme, backend and delta
    dtype; each further mode on a copy of ``net`` on the dense backend; ``"original"`` on a copy of ``reference``
    (default ``net``: pass the unmodified network when ``net``'s weights were fine-tuned). ``net``'s mode and
    counting settings are restored afterwards, which resets it.

    Args:
        net: the converted network.
        frames: a clip ``[T, B, ...]`` (run ``chunk`` steps at a time) or an iterable of clips ``[t, B, ...]``
            (decoded lazily from a long video, say): any length, in the memory of one chunk.
        modes: networks to run (:data:`sigmadelta.MODES`), e.g. ``("original", "sigma-delta")``.
        chunk: steps per clip-mode call for a tensor ``frames``; bounds memory only, no result depends on it.
        reference: the network whose ``"original"`` mode is the reference; default ``net``.
        per_step_counts: ``None``, ``"total"`` or ``"layer"``: which per-step counts to keep (see
            :attr:`SigmaDeltaNet.per_step_counts`); running totals are always kept.
        on_chunk: called after each chunk as ``on_chunk(clip, outputs, nets)``: ``outputs`` maps each mode to its
            output ``[t, B, ...]``, ``nets`` each mode to the network that ran it (read its quantizers there).
        progress: a tqdm bar (or anything with ``update(n)``) advanced by the steps of each chunk; a tqdm bar also
            shows the frames per second of ``net`` itself (its mode's calls only, op counting included).

    Returns:
        Each mode's :class:`~sigmadelta.OpCounts` over the whole stream.
    """
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"unknown modes {unknown or modes!r}; choose from {MODES}")
    if isinstance(frames, torch.Tensor):
        frames = chunks_of(frames, chunk)
    own = next((m for m in modes if m != ORIGINAL), None)
    nets = {m: _copy_for(reference if m == ORIGINAL and reference is not None else net, m, per_step_counts)
            for m in modes if m != own}
    with net.configured(**({} if own is None else {"mode": own}), counting=True, per_step_counts=per_step_counts):
        net.reset()  # from zero state, also when the net was in this mode already
        if own is not None:
            nets[own] = net
        steps, own_seconds = 0, 0.0
        for clip in frames:
            outputs = {}
            for m in modes:
                start = time.perf_counter()
                outputs[m] = nets[m].run(clip)
                if m == own:
                    own_seconds += time.perf_counter() - start
            steps += len(clip)
            if on_chunk is not None:
                on_chunk(clip, outputs, nets)
            if progress is not None:
                progress.update(len(clip))
                if own is not None and hasattr(progress, "set_postfix") and own_seconds > 0:
                    # the network's own frames per second, counting included (not the reference's or the bar's)
                    progress.set_postfix({f"{own} fps": f"{steps / own_seconds:.1f}"}, refresh=False)
        if not steps:
            raise ValueError("the stream holds no frame")
        return {m: n.op_counts() for m, n in nets.items()}


def _copy_for(net: SigmaDeltaNet, mode: str, per_step_counts: str | None) -> SigmaDeltaNet:
    """A counting copy of ``net`` of its own (its state and settings apart), on the dense backend, in ``mode``."""
    other = net.dense_copy(mode)
    other.counting, other.per_step_counts = True, per_step_counts
    return other
