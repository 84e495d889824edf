"""Run a block of torch code on one thread."""

from __future__ import annotations

from contextlib import contextmanager

import torch

__all__ = ["one_thread"]


@contextmanager
def one_thread():
    """Run torch on one thread inside the block, then restore the thread count.

    For loops of small ops (a few MB each) one thread is faster than syncing a pool (8x on a busy 2-core
    machine), and results no longer depend on the machine's thread count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
