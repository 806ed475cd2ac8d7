"""What made a benchmark's images, as every ImageNet-C, ImageNet-C-bar and ImageNet-P record names it: the one
place the record's ``generator`` field is defined.

A record's ``generator`` maps each benchmark its conditions belong to to one description::

    "generator": {"imagenet-c": {"benchmark": "imagenet-c", "ibnbench": "0.1.0",
                                 "reference": "imagecorruptions 1.1.2 (...)", "source": "on-the-fly", "jpeg": null}}

- ``reference``: what the images are equal to (:data:`REFERENCES` on the fly: the library or script whose formulas
  ibnbench computes; :data:`RELEASED_REFERENCES` for the released files read as they are);
- ``source``: ``"on-the-fly"`` (computed on the device from the clean images) or ``"released-files"``;
- ``jpeg``: the JPEG quality the images went through (on the fly: the suite's ``jpeg`` round trip; the released
  ImageNet-C files were saved at 85), ``null`` for none; a list of the qualities when the benchmark's conditions differ.
- ``ibnbench``: the version that computed or read them.

Records written before this field hold none: their generator is unknown. Two records whose descriptions differ in
anything but the ibnbench version are not compared silently (:mod:`ibnbench.results.comparability`).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ibnbench._version import __version__

ON_THE_FLY = "on-the-fly"
RELEASED = "released-files"
SOURCES = (ON_THE_FLY, RELEASED)
REFERENCES = {
    "imagenet-c": "imagecorruptions 1.1.2 (the constants of hendrycks/robustness make_imagenet_c.py)",
    "imagenet-c-bar": "facebookresearch/augmentation-corruption imagenet_c_bar/corrupt.py at the levels of "
                      "imagenet_c_bar.csv",
    "imagenet-p": "hendrycks/robustness ImageNet-P/create_p/make_imagenet_p.py (its frames, before H.264)",
}
"""What each benchmark's on-the-fly images are computed to equal."""
RELEASED_REFERENCES = {
    "imagenet-c": "the released ImageNet-C files (hendrycks/robustness, JPEG quality 85)",
    "imagenet-c-bar": "the released ImageNet-C-bar files (facebookresearch/augmentation-corruption, JPEG quality 85)",
    "imagenet-p": "the released ImageNet-P videos (hendrycks/robustness, libx264 yuv420p), decoded with PyAV",
}
"""What each benchmark's released files are."""
RELEASED_JPEG = 85
"""The JPEG quality the released ImageNet-C and C-bar files were saved at."""


@dataclass(frozen=True)
class BenchmarkGenerator:
    """How one condition's images were made: its ``benchmark`` (a key of :data:`REFERENCES`), ``source`` (one of
    :data:`SOURCES`) and ``jpeg`` (the round trip's quality, None for none)."""

    benchmark: str
    source: str = ON_THE_FLY
    jpeg: int | None = None

    def __post_init__(self) -> None:
        if self.benchmark not in REFERENCES or self.source not in SOURCES:  # our bug, not the user's
            raise ValueError(f"unknown benchmark {self.benchmark!r} or source {self.source!r}")

    @property
    def reference(self) -> str:
        return (REFERENCES if self.source == ON_THE_FLY else RELEASED_REFERENCES)[self.benchmark]


class MadeByGenerator(Protocol):
    """A condition that belongs to a benchmark (its :meth:`benchmark_generator` is not None)."""

    def benchmark_generator(self) -> BenchmarkGenerator | None: ...


def record_generator(conditions: Iterable[MadeByGenerator]) -> dict[str, dict]:
    """The record's ``generator`` field: per benchmark of ``conditions``, its description (see the module's
    docstring); empty when none belongs to a benchmark."""
    by_benchmark: dict[str, list[BenchmarkGenerator]] = {}
    for condition in conditions:
        made = condition.benchmark_generator()
        if made is not None:
            by_benchmark.setdefault(made.benchmark, []).append(made)
    out = {}
    for benchmark, made in by_benchmark.items():
        sources = sorted({m.source for m in made})
        qualities = sorted({m.jpeg for m in made}, key=lambda q: -1 if q is None else q)
        out[benchmark] = {"benchmark": benchmark, "ibnbench": __version__,
                          "reference": "; ".join(dict.fromkeys(m.reference for m in made)),
                          "source": sources[0] if len(sources) == 1 else sources,
                          "jpeg": qualities[0] if len(qualities) == 1 else qualities}
    return out


def describe(description: dict) -> str:
    """One generator description in words: ``imagenet-c on-the-fly, JPEG q85 (imagecorruptions 1.1.2 ...)``."""
    jpeg = description.get("jpeg")
    finish = ("no JPEG" if jpeg is None else f"JPEG q{jpeg}" if isinstance(jpeg, int)
              else "JPEG " + "/".join("none" if q is None else f"q{q}" for q in jpeg))
    source = description.get("source")
    source = source if isinstance(source, str) else "+".join(map(str, source or ["?"]))
    return f"{description.get('benchmark', '?')} {source}, {finish} ({description.get('reference', '?')})"
