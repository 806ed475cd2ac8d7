"""Baseline constants from a file the user gives (``report --baseline-constants FILE``): the numbers a benchmark's
scores are normalised by when the baseline model is not in the records (ImageNet-C-bar's mCE-bar; ImageNet-P's
mFR and mT5D).

The file is TOML. A top-level ``suite`` says which benchmark it is for (``"imagenet-c-bar"``, ...), an optional
``model`` names the baseline it comes from (shown in the report), and one table per metric maps each corruption (or
perturbation) to the baseline's value: one number (its mean over the severities) or one number per severity (a
list, averaged here)::

    suite = "imagenet-c-bar"
    model = "resnet50 (my run)"
    [errors]                       # top-1 error %, per corruption
    blue_noise_sample = 62.5       # the mean over severities 1-5
    sparkles = [40.1, 45.0, 50.2, 58.3, 61.0]   # or one per severity

Which tables and names a benchmark takes is its caller's to say (:func:`read_baseline_constants`); a name the
benchmark does not have, a table it does not take, or a value that is not a finite number above 0 is refused,
naming the file. Names may be left out: their scores are then not normalised (and the mean over all is not given).
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ibnbench.errors import MissingFileError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FILE_KEYS = ("suite", "model")
"""The top-level keys beside the metric tables."""


@dataclass(frozen=True)
class BaselineConstants:
    """Baseline numbers read from ``path``: for ``suite``, from baseline ``model`` (None when the file does not
    say), ``tables[metric][name]`` its value (a mean over severities when the file gave one per severity)."""

    path: Path
    suite: str
    model: str | None
    tables: dict[str, dict[str, float]]
    settings: dict[str, int]
    """The benchmark's own top-level keys the file gave (ImageNet-P's ``difficulty``)."""

    @property
    def label(self) -> str:
        """How a report names these constants: the model, or the file."""
        return self.model or self.path.name


def read_baseline_constants(path: str | os.PathLike, suites: Sequence[str], tables: Mapping[str, Sequence[str]],
                            settings: Sequence[str] = (), per_severity: bool = True) -> BaselineConstants:
    """The constants in ``path`` for one of ``suites`` (its ``suite`` key must name one), with ``tables`` the metric
    tables that benchmark takes, each with the names it may hold, ``settings`` its own optional integer top-level
    keys, and ``per_severity`` whether a value may be a list (one per severity). Any problem raises
    :class:`UsageError` (or :class:`MissingFileError`) naming the file."""
    path = Path(path).expanduser()
    data = _read_toml(path)
    where = f"--baseline-constants {path}"
    suite = data.get("suite")
    if suite not in suites:
        raise UsageError(f"{where}: top-level 'suite' must name the benchmark the constants are for, one of "
                         f"{', '.join(map(repr, suites))} (got {suite!r})")
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise UsageError(f"{where}: 'model' must be a string naming the baseline, not {model!r}")
    unknown = [key for key in data if key not in (*FILE_KEYS, *settings) and key not in tables]
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r} for suite {suite!r} (tables: {', '.join(tables)}; "
                         f"other keys: {', '.join((*FILE_KEYS, *settings))})")
    chosen = {key: data[key] for key in settings if key in data}
    for key, value in chosen.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise UsageError(f"{where}: {key!r} must be an integer, not {value!r}")
    read = {metric: _table(where, metric, data[metric], names, per_severity)
            for metric, names in tables.items() if metric in data}
    if not any(read.values()):
        raise UsageError(f"{where}: no constants (give a table [{next(iter(tables))}] of name = value)")
    return BaselineConstants(path, suite, model, read, chosen)


def _read_toml(path: Path) -> dict:
    if not path.is_file():
        raise MissingFileError(f"--baseline-constants {path}: no such file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--baseline-constants {path}: cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--baseline-constants {path}: not TOML ({exc})") from None


def _table(where: str, metric: str, table: object, names: Sequence[str], per_severity: bool) -> dict[str, float]:
    """One metric table: ``name = value`` or (``per_severity``) ``name = [value per severity]``, each value a finite
    number above 0."""
    if not isinstance(table, dict):
        raise UsageError(f"{where}: [{metric}] must be a table of name = value")
    out = {}
    for name, value in table.items():
        if name not in names:
            raise UsageError(f"{where}: [{metric}] names {name!r}, which is not one of {', '.join(names)}")
        values = value if isinstance(value, list) and per_severity else [value]
        if not values or not all(_positive(v) for v in values):
            wanted = "a number above 0" + (" or a list of them" if per_severity else "")
            raise UsageError(f"{where}: [{metric}] {name} must be {wanted}, not {value!r}")
        out[name] = sum(values) / len(values)
    return out


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
