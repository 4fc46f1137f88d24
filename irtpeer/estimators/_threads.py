"""How many CPU threads torch may use for one fit.

torch's default (one intra-op thread per core, spinning while it waits) is a poor fit for this
work: a small design is a few hundred short vector operations per Newton pass, and when another
process holds a core, every parallel region waits for the descheduled thread — fits were measured
10-25x slower and bimodal on a 2-core machine with one busy core. So:

* threads are chosen by the size of the work: one thread below :data:`SMALL_WORK` observations
  (where threading never pays), otherwise the cores this process may run on;
* OpenMP threads sleep instead of spinning while they wait (``OMP_WAIT_POLICY=PASSIVE``, set before
  torch starts its thread pool, unless the user set it);
* ``threads=N`` (``irtpeer score --threads N``) overrides the choice.
"""

from __future__ import annotations

import contextlib
import os

from .._errors import IrtpeerError

__all__ = ["SMALL_WORK", "choose_threads", "torch_threads"]

#: Observations in a dimension below which one thread is fastest (measured: benchmarks/bench_threads.py).
SMALL_WORK = 1_000_000

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def choose_threads(threads: int | None, n_obs: int) -> int:
    """The thread count for a fit of ``n_obs`` observations (``threads`` wins when given)."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise IrtpeerError(f"threads must be a whole number >= 1, got {threads!r}")
        return threads
    return 1 if n_obs < SMALL_WORK else available_cores()


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` intra-op threads, then restore the previous setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
