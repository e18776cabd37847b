"""Small statistics for benchmark runs: a median with its spread, never a lone mean."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


def timeit(fn: Callable[[], object], runs: int) -> list[float]:
    """Seconds of each of ``runs`` calls of ``fn``, after one untimed warm-up call."""
    fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


@dataclass(frozen=True)
class Summary:
    """Median and range of repeated measurements (few runs: the median resists an outlier)."""

    n: int
    median: float
    min: float
    max: float
    mean: float

    @property
    def spread(self) -> float:
        """Relative half-range around the median (0.05 means roughly +/-5 %)."""
        if self.median == 0:
            return 0.0
        return (self.max - self.min) / 2 / abs(self.median)

    def to_json(self) -> dict:
        return {**asdict(self), "spread": self.spread}


def summarize(values: list[float] | tuple[float, ...]) -> Summary:
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("no values to summarize")
    return Summary(
        n=len(vals),
        median=statistics.median(vals),
        min=min(vals),
        max=max(vals),
        mean=statistics.fmean(vals),
    )


def fmt_summary(s: Summary, digits: int = 0) -> str:
    """``"286 (271-290)"``: the median, then the range of the runs."""
    if s.n == 1:
        return f"{s.median:.{digits}f}"
    return f"{s.median:.{digits}f} ({s.min:.{digits}f}-{s.max:.{digits}f})"


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def rusage_cpu(children: bool = False) -> float:
    """User + system CPU seconds of this process, or of its waited-for children."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime
