"""Torch's CPU thread count for a block of work."""

from __future__ import annotations

from contextlib import contextmanager

import torch

__all__ = ["torch_threads", "one_thread"]


@contextmanager
def torch_threads(n: int | None):
    """Run torch on ``n`` CPU threads inside the block, then restore the thread count (``None``: leave it).

    For loops of small ops (a few MB each) one thread is faster than syncing a pool (8x on a busy 2-core
    machine), and results no longer depend on the machine's thread count.
    """
    threads = torch.get_num_threads()
    if n is not None:
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"threads must be an integer >= 1, got {n!r}")
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def one_thread():
    """:func:`torch_threads` with one thread."""
    return torch_threads(1)
