"""The progress of a collection's analysis: inputs done of total, frames/s, ETA, failures so far.

    progress = Progress(inputs=12, frames=5400)    # frames: what the containers state (an estimate)
    progress.frames(1200)                          # frames analysed so far, in every worker together
    progress.inputs(done=3, failed=1)
    progress.close()

On a terminal, a tqdm bar over frames (its rate is frames/s, its ETA the frames left at that rate)
with the inputs and failures after it. Without one (a long run's log file), a log line every
``log_every`` seconds instead; ``quiet``: neither.
"""
from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger("kefer")


class Progress:
    """Frames and inputs done so far, shown as they change; ``n``: frames so far, ``total``: expected."""

    def __init__(self, inputs: int, frames: int, quiet: bool = False, log_every: float = 30.0):
        self.total_inputs, self.done, self.failed = inputs, 0, 0
        self.n, self.total = 0, max(frames, inputs)
        terminal = sys.stderr.isatty()
        self.bar = tqdm(total=self.total, unit="frame", desc="analysing", disable=quiet or not terminal, smoothing=0.1)
        self.start = time.monotonic()
        self.first = None   # (when, frames): the workers had started (``started``, else the first progress)
        self.log_every, self.last_log = (None if quiet or terminal else log_every), self.start
        self._postfix()

    def frames(self, count: int) -> None:
        """``count``: frames (and images) analysed so far, in all workers together."""
        if count > self.n:
            if self.first is None:
                self.first = (time.monotonic(), count)
            self.total = max(self.total, count)
            self.bar.total = self.total
            self.bar.update(count - self.n)
            self.n = count
        self._maybe_log()

    def started(self) -> None:
        """Every worker is ready: the frames/s after start-up count from now."""
        self.first = (time.monotonic(), self.n)

    def inputs(self, done: int, failed: int) -> None:
        """Inputs finished so far: ``done`` analysed, ``failed`` reported as unreadable."""
        self.done, self.failed = done, failed
        self._postfix()
        self._maybe_log()

    def _postfix(self) -> None:
        self.bar.set_postfix_str(f"inputs {self.done + self.failed}/{self.total_inputs}, failed {self.failed}")

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def rate(self) -> float:
        """Frames per second since the start."""
        return self.n / max(self.elapsed(), 1e-9)

    def warm_rate(self) -> float | None:
        """Frames per second since the first frames were done (start-up left out); None before."""
        if self.first is None or self.n <= self.first[1]:
            return None
        return (self.n - self.first[1]) / max(time.monotonic() - self.first[0], 1e-9)

    def _maybe_log(self) -> None:
        now = time.monotonic()
        if self.log_every is not None and now - self.last_log >= self.log_every:
            self.last_log = now
            eta = f"{(self.total - self.n) / self.rate():.0f} s" if self.n else "?"
            log.info("inputs %d/%d, %d failed, %d frames, %.1f frames/s, ETA %s", self.done + self.failed,
                     self.total_inputs, self.failed, self.n, self.rate(), eta)

    def close(self) -> None:
        self.bar.close()
