"""The process group under ``torchrun``, and what it changes of a run's float rounding."""

from __future__ import annotations

import atexit
import os
import sys

import torch

__all__ = ["init_distributed", "process_rank_and_count", "float_path", "quiet_unless_first_process"]


def init_distributed() -> tuple[int, int]:
    """Join the process group torchrun set up (``WORLD_SIZE`` > 1): gloo on the CPU, NCCL on GPUs.

    Returns ``(rank, world_size)``; ``(0, 1)`` outside torchrun. The group it joins is destroyed at exit, while the
    interpreter is still whole: gloo's worker threads torn down during finalization abort the process
    ("terminate called without an active exception", exit code -6) on some runs.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    atexit.register(_leave_process_group)
    return dist.get_rank(), dist.get_world_size()


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        try:  # every process reaches here before any tears its connections down: a peer's gloo thread that is
            dist.barrier()  # still waiting on a closed pair aborts it
        except Exception:  # a peer already gone: leave anyway
            pass
        dist.destroy_process_group()


def process_rank_and_count() -> tuple[int, int]:
    """``(rank, world_size)`` of the process group joined, ``(0, 1)`` when none is (it joins nothing)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def float_path(num_threads: int | None = None) -> dict:
    """What decides a training run's float rounding besides its data and settings: torch's CPU threads
    (``num_threads``, or torch's setting when ``None``) and the number of processes, which fix the order of the
    reductions. The calibration and fine-tuning caches are keyed by it, so that a run is reused only where
    retraining would give the same numbers bit for bit."""
    return dict(threads=int(num_threads or torch.get_num_threads()), processes=process_rank_and_count()[1])


def quiet_unless_first_process() -> None:
    """Under torchrun, send the standard output of every process but the first to ``os.devnull`` (errors still
    reach the standard error), so that a command prints its report once."""
    if process_rank_and_count()[0]:
        sys.stdout = open(os.devnull, "w")
