"""Progress lines with counts and rates for long work, at a bounded frequency (no print spam)."""

from __future__ import annotations

import logging
import time


class Progress:
    """Log ``label: done/total (pct) rate/s, eta`` at most every ``every_s`` seconds, and once at the end."""

    def __init__(
        self, label: str, total: int, *, unit: str = "items", logger: logging.Logger | None = None, every_s: float = 5.0
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.log = logger or logging.getLogger("twins_tasks")
        self.every_s = every_s
        self.done = 0
        self.start = time.perf_counter()
        self._last = self.start

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def rate(self) -> float:
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 else 0.0

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._last >= self.every_s and self.done < self.total:
            self._last = now
            self._emit()

    def finish(self) -> None:
        self._emit(final=True)

    def _emit(self, final: bool = False) -> None:
        rate = self.rate
        pct = 100.0 * self.done / self.total if self.total else 100.0
        if final:
            self.log.info(
                "%s: %d/%d %s in %.1f s (%.1f %s/s)",
                self.label,
                self.done,
                self.total,
                self.unit,
                self.elapsed,
                rate,
                self.unit,
            )
        else:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            self.log.info(
                "%s: %d/%d %s (%.0f%%), %.1f %s/s, eta %.0f s",
                self.label,
                self.done,
                self.total,
                self.unit,
                pct,
                rate,
                self.unit,
                eta,
            )
