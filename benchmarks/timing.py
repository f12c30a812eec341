"""Side-by-side timing for the benchmarks: warm up, interleave candidates, take medians."""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import numpy as np


def median_seconds(
    candidates: dict[str, Callable[[], object]], repeats: int = 15, calls: int = 10,
    prepare: Callable[[], object] | None = None,
) -> dict[str, float]:
    """Median wall time of one call of each candidate, measured interleaved in one run.

    Each candidate is a thunk returning JAX arrays; every measurement runs it `calls` times
    and blocks on the last result. Candidates alternate within each repeat so that load from
    other processes affects them alike. With `prepare` (a thunk, e.g. one that evicts the
    caches), it runs before every call, outside the timed span, and each call is timed on its
    own (blocked on), the measurement their sum.
    """
    for run in candidates.values():  # compile and warm up
        jax.block_until_ready(run())
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            samples[name].append(_seconds_per_call(run, calls, prepare))
    return {name: float(np.median(times)) for name, times in samples.items()}


def _seconds_per_call(run: Callable[[], object], calls: int,
                      prepare: Callable[[], object] | None) -> float:
    """One measurement of `median_seconds`: `calls` calls of `run`, mean seconds per call."""
    if prepare is None:
        start = time.perf_counter()
        for _ in range(calls):
            result = run()
        jax.block_until_ready(result)
        return (time.perf_counter() - start) / calls
    total = 0.0
    for _ in range(calls):
        jax.block_until_ready(prepare())
        start = time.perf_counter()
        jax.block_until_ready(run())
        total += time.perf_counter() - start
    return total / calls
