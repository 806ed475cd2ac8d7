"""The IBN-Net paper's published numbers (Tables 1-5) as data: ``reference/ibn_net_paper.toml``.

Every cell names the ibnbench model that is the implementation it was measured with, so a report can put
a run next to the right cell and say when it compares a different implementation (the released
``resnet50_ibn_a`` against the paper's ``resnet50_ibn_a_old``).
"""
from __future__ import annotations

import functools
import importlib.resources
import math
import sys
from dataclasses import dataclass

import pandas as pd

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class PaperCell:
    """One published cell: top-1/top-5 error % (NaN where the paper prints "-"), and the bracketed delta."""

    table: int
    row: str
    column: str
    label: str
    model: str
    condition: str
    top1: float
    top5: float
    delta: tuple[float, float] | None

    def text(self, with_delta: bool = True) -> str:
        """The cell as the paper prints it: ``top1/top5 (delta1/delta5)``."""
        top5 = "-" if math.isnan(self.top5) else f"{self.top5:.2f}"
        delta = f" ({self.delta[0]:.2f}/{self.delta[1]:.2f})" if with_delta and self.delta else ""
        return f"{self.top1:.2f}/{top5}{delta}"


@functools.cache
def _data() -> dict:
    return tomllib.loads(importlib.resources.files("ibnbench.reference").joinpath("ibn_net_paper.toml").read_text())


def cells(table: int | None = None) -> list[PaperCell]:
    """All transcribed cells in table order (or those of one table)."""
    out = []
    for number, spec in _data()["tables"].items():
        if table is not None and int(number) != table:
            continue
        for c in spec["cells"]:
            out.append(PaperCell(int(number), c["row"], c["column"], spec["label"].format(**c), c["model"],
                                 c["condition"], *c["err"], tuple(c["delta"]) if "delta" in c else None))
    return out


def titles() -> dict[int, str]:
    """Each table's title, by table number."""
    return {int(n): spec["title"] for n, spec in _data()["tables"].items()}


def implementation(model: str) -> str:
    """The model whose paper cells compare with ``model``: itself, or the paper's implementation of the same
    network (``resnet50_ibn_a`` -> ``resnet50_ibn_a_old``)."""
    return _data()["counterparts"].get(model, model)


def cells_of(model: str) -> dict[str, PaperCell]:
    """The paper's cells of one implementation by condition id; the lowest table wins where tables repeat."""
    found: dict[str, PaperCell] = {}
    for cell in cells():
        if cell.model == model:
            found.setdefault(cell.condition, cell)
    return found


def table(number: int) -> pd.DataFrame:
    """A table laid out as the paper prints it (rows x columns of cell texts)."""
    grid: dict[str, dict[str, str]] = {}
    for c in cells(number):
        grid.setdefault(c.column, {})[c.row] = c.text()
    return pd.DataFrame(grid).fillna("")
