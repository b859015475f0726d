"""One runtime call for the chips of several concurrent requests.

A server embeds the faces of each request as it comes, a few chips at a time, where the network
runs faster per face in larger batches (onnxruntime on two cores: about 4 ms a face alone, 2.7 ms
in a batch of 32). :class:`ConcurrentBatches` merges the calls that meet: a call that finds the
runtime idle runs at once, alone (so an idle server adds no wait); calls that arrive while a batch
runs queue, and the first of them then runs the next batch for all of them. Under load, batches
grow by themselves; nobody waits for a timer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class _Call:
    chips: Sequence[np.ndarray]
    done: threading.Event = field(default_factory=threading.Event)
    leads: bool = False  # runs the next batch
    result: np.ndarray | None = None
    error: BaseException | None = None


class ConcurrentBatches:
    """Runs ``run(chips) -> rows`` (one row per chip) on the chips of concurrent callers together,
    at most ``max_chips`` a batch (a single call larger than that runs alone)."""

    def __init__(self, run: Callable[[Sequence[np.ndarray]], np.ndarray], max_chips: int) -> None:
        self._run = run
        self._max_chips = max_chips
        self._queue: list[_Call] = []
        self._busy = False
        self._lock = threading.Lock()

    def __call__(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        call = _Call(chips)
        with self._lock:
            self._queue.append(call)
            if not self._busy:
                self._busy = call.leads = True
        if not call.leads:
            call.done.wait()
        if call.leads:  # idle runtime, or handed the next batch by the call before
            self._lead()
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return call.result

    def _lead(self) -> None:
        """Run one batch (the oldest calls, up to ``max_chips``), then hand the next to the first
        call still queued, or leave the runtime idle."""
        with self._lock:
            batch, chips = [], 0
            while self._queue and (not batch or chips + len(self._queue[0].chips) <= self._max_chips):
                batch.append(self._queue.pop(0))
                chips += len(batch[-1].chips)
        try:
            rows = self._run([chip for call in batch for chip in call.chips])
            start = 0
            for call in batch:
                call.result, start = rows[start : start + len(call.chips)], start + len(call.chips)
        except BaseException as error:  # each caller raises it; the next batch still runs
            for call in batch:
                call.error = error
        with self._lock:
            if self._queue:
                self._queue[0].leads = True
                self._queue[0].done.set()
            else:
                self._busy = False
        for call in batch:
            call.done.set()
