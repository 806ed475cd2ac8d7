"""Progress that works everywhere: a tqdm bar on a terminal, elsewhere (CI, nohup, SLURM logs) a plain line
every ``interval`` seconds and at the end, each with images done, images/s and the time left."""
from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm.auto import tqdm

PLAIN_INTERVAL_S = 30.0


class Progress:
    """Counts images; draws a tqdm bar when ``stream`` is a terminal, prints plain lines otherwise.

    ``enabled=False`` keeps the count (and :attr:`rate`) but shows nothing."""

    def __init__(self, total: int, desc: str, enabled: bool = True, initial: int = 0,
                 interval: float | None = None, stream: TextIO | None = None) -> None:
        self.total, self.desc, self.done = total, desc, 0
        self.initial = initial
        self.stream = stream or sys.stderr
        self.interval = PLAIN_INTERVAL_S if interval is None else interval
        self.start = self.last = time.perf_counter()
        terminal = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = (tqdm(total=total + initial, initial=initial, desc=desc, unit="img", dynamic_ncols=True,
                         smoothing=0.1, file=self.stream) if terminal else None)
        self.plain = enabled and not terminal

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def rate(self) -> float:
        """Images per second processed by this call (images done before a resume do not count)."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    def line(self) -> str:
        """``evaluate: 640/1000 images, 41.2 images/s, ETA 00:08``."""
        left = self.total - self.done
        eta = tqdm.format_interval(left / self.rate) if self.rate else "?"
        return (f"{self.desc}: {self.initial + self.done}/{self.initial + self.total} images, "
                f"{self.rate:.1f} images/s, ETA {eta}")

    def write(self, message: str) -> None:
        """A message that does not break the bar."""
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.plain and self.done < self.total and time.perf_counter() - self.last >= self.interval:
            self.last = time.perf_counter()
            print(self.line(), file=self.stream, flush=True)

    def close(self, failed: bool = False) -> None:
        """Close the bar, or print the final plain line (not after a failure: its error line says it all)."""
        if self.bar is not None:
            self.bar.close()
        elif self.plain and not failed:
            finished = (f"{self.desc}: {self.initial + self.done}/{self.initial + self.total} images in "
                        f"{tqdm.format_interval(self.elapsed)}, {self.rate:.1f} images/s")
            print(finished if self.done >= self.total else self.line(), file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(failed=exc_type is not None)
