"""Suites as data: ``transforms/<suite>.toml`` files, each an ordered list of conditions.

A suite file holds an optional ``description``, suite-wide ``clip`` / ``quantize`` defaults (and ``seed`` /
``jpeg`` for the ops that take them: ImageNet-C and C-bar corruptions, ImageNet-P perturbations) and a
``[[conditions]]`` array; every condition has an ``id``, a display ``label``, an ``op`` (see
:data:`CONDITION_TYPES`) and the op's parameters, and may override ``clip`` / ``quantize``.
The suite's ``hash`` is the sha256 of its conditions' canonical definitions, so results made with
different definitions are never mixed.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from ibnbench.conditions.base import Condition

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib
import json

from ibnbench.conditions.base import Brightness, CBarCorruption, Contrast, Corruption, Identity, Shift
from ibnbench.conditions.imagenet_p import Perturbation
from ibnbench.conditions.style import Dir, GeneratorSource, Style
from ibnbench.errors import MissingFileError, SuiteError

SUITE_FIELDS = ("description", "clip", "quantize", "seed", "jpeg", "conditions")
OP_DEFAULTS = ("seed", "jpeg")
"""Suite-wide fields handed to every condition whose op takes them (unless the condition sets its own)."""


COMMON_FIELDS = ("id", "label", "op", "clip", "quantize")
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+*-]*$")




def shipped_suites(folder: str = "transforms") -> dict[str, Path]:
    """The shipped suite files by name (``folder="datasets"``: the dataset suites of
    :mod:`ibnbench.conditions.dataset_suites`).

    A source checkout (``pyproject.toml`` beside the package) uses its own ``transforms/``; an installed
    wheel uses the package data ``ibnbench.transforms``.
    """
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / folder).is_dir():
        files = list((checkout / folder).iterdir())
    else:
        files = [Path(str(f)) for f in importlib.resources.files(f"ibnbench.{folder}").iterdir()]
    return {p.stem: p for p in sorted(files, key=lambda p: p.stem) if p.suffix == ".toml"}


def list_suites() -> list[str]:
    """Names of the shipped suites."""
    return list(shipped_suites())


@dataclass(frozen=True)
class Suite:
    """An ordered set of conditions loaded from ``path``; ``hash`` covers the definitions of all of them."""

    name: str
    path: Path
    description: str
    conditions: tuple[Condition, ...]
    hash: str

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.conditions]

    @property
    def requires(self) -> list[str]:
        """Every missing asset of every condition (empty when the suite can run)."""
        return [missing for c in self.conditions for missing in c.requires]

    def __iter__(self) -> Iterator[Condition]:
        return iter(self.conditions)

    def __len__(self) -> int:
        return len(self.conditions)

    def __getitem__(self, condition_id: str) -> Condition:
        for condition in self.conditions:
            if condition.id == condition_id:
                return condition
        raise SuiteError(f"suite {self.name!r} has no condition {condition_id!r}; "
                         f"available: {', '.join(self.ids)}")

    def select(self, ids: Iterable[str]) -> Suite:
        """The conditions named in ``ids``, in suite order; the hash stays the suite's (same definitions)."""
        wanted = list(ids)
        for condition_id in wanted:
            self[condition_id]
        if not wanted:
            raise SuiteError(f"no conditions selected from suite {self.name!r}; available: {', '.join(self.ids)}")
        return replace(self, conditions=tuple(c for c in self.conditions if c.id in wanted))


def _read(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise SuiteError(f"{path}: not valid TOML (not UTF-8 text)") from None


def _flag(where: str, table: Mapping, field: str, default: bool) -> bool:
    value = table.get(field, default)
    if not isinstance(value, bool):
        raise SuiteError(f"{where}: field {field!r}: expected true or false, got {value!r}")
    return value


def _condition(path: Path, index: int, entry: object, defaults: dict[str, bool], op_defaults: Mapping[str, object],
               style_settings: Callable[[str], dict]) -> Condition:
    where = f"{path}: condition #{index + 1}"
    if not isinstance(entry, dict):
        raise SuiteError(f"{where}: expected a [[conditions]] table, got {entry!r}")
    condition_id = entry.get("id")
    if not isinstance(condition_id, str) or not ID_PATTERN.match(condition_id):
        raise SuiteError(f"{where}: field 'id': expected a name of letters, digits and _ . + * - "
                         f"(no spaces or commas), got {condition_id!r}")
    where = f"{path}: condition {condition_id!r}"
    op = entry.get("op")
    if op not in CONDITION_TYPES:
        raise SuiteError(f"{where}: field 'op': expected one of {', '.join(CONDITION_TYPES)}, got {op!r}")
    cls = CONDITION_TYPES[op]
    parameters = cls.parameters()
    unknown = [k for k in entry if k not in COMMON_FIELDS and k not in parameters]
    if unknown:
        raise SuiteError(f"{where}: field {unknown[0]!r} is not known for op {op!r} "
                         f"(expected: {', '.join(list(parameters) + list(COMMON_FIELDS))})")
    absent = [k for k, required in parameters.items() if required and k not in entry]
    if absent:
        raise SuiteError(f"{where}: field {absent[0]!r} is required for op {op!r}")
    label = entry.get("label", condition_id)
    if not isinstance(label, str):
        raise SuiteError(f"{where}: field 'label': expected a string, got {label!r}")
    kwargs = {k: entry[k] if k in entry else op_defaults[k] for k in parameters if k in entry or k in op_defaults}
    if op == "style" and isinstance(kwargs.get("style"), str):
        kwargs.update(style_settings(kwargs["style"]))
    if op == "dir" and isinstance(kwargs.get("root"), str):
        kwargs["root"] = path.parent / Path(kwargs["root"]).expanduser()
    flags = {field: _flag(where, entry, field, default) for field, default in defaults.items()}
    try:
        return cls(condition_id, label, **flags, **kwargs)
    except ValueError as exc:
        raise SuiteError(f"{where}: {exc}") from None


def _locate(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path).expanduser()
    if path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise MissingFileError(f"suite file {path} does not exist")
        return path
    shipped = shipped_suites()
    if str(name_or_path) not in shipped:
        raise SuiteError(f"unknown suite {str(name_or_path)!r}; shipped suites: {', '.join(shipped)} "
                         "(or give the path of a .toml file)")
    return shipped[str(name_or_path)]


def read_suite(name_or_path: str | os.PathLike, *, style_weights: Mapping[str, str] | None = None,
               generators: GeneratorSource | None = None,
               style_dirs: Mapping[str, str | os.PathLike] | None = None) -> Suite:
    """Read a shipped suite by name (``"table1"``) or a suite file by path.

    ``generators``: where its style conditions get their generators (without one they can be listed and hashed,
    not run; :func:`ibnbench.load_suite` hands in the zoo's).
    ``style_weights`` maps a style name to the generator weights its style conditions use instead of
    the file's (``{"monet": "random"}`` or ``{"monet": "/path/style_monet.pth"}``); ``style_dirs`` maps a style name
    to a folder of its output pre-rendered by ``ibnbench stylize --resize crop``, read instead of running it.
    None of these change the suite's hash.
    """
    path = _locate(name_or_path)
    data = _read(path)
    unknown = [k for k in data if k not in SUITE_FIELDS]
    if unknown:
        raise SuiteError(f"{path}: field {unknown[0]!r} is not known (expected: {', '.join(SUITE_FIELDS)})")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise SuiteError(f"{path}: field 'description': expected a string, got {description!r}")
    entries = data.get("conditions")
    if not isinstance(entries, list) or not entries:
        raise SuiteError(f"{path}: field 'conditions': expected a non-empty [[conditions]] array")
    defaults = {field: _flag(str(path), data, field, False) for field in ("clip", "quantize")}
    op_defaults = {field: data[field] for field in OP_DEFAULTS if field in data}
    style_weights, style_dirs = style_weights or {}, style_dirs or {}

    def style_settings(style: str) -> dict:
        return {"generators": generators,
                **({"weights": style_weights[style]} if style in style_weights else {}),
                **({"rendered": style_dirs[style]} if style in style_dirs else {})}

    conditions = tuple(_condition(path, i, entry, defaults, op_defaults, style_settings)
                       for i, entry in enumerate(entries))
    styles = sorted({c.style for c in conditions if isinstance(c, Style)})
    for option, given in (("--style-weights", style_weights), ("--style-dir", style_dirs)):
        unused = sorted(set(given) - set(styles))
        if unused:  # a typo (monnet=...) would leave monet with its official weights
            raise SuiteError(f"{path}: {option} {unused[0]}=...: no style condition uses style {unused[0]!r} "
                             f"(its styles: {', '.join(styles) or 'none'})")
    seen: set[str] = set()
    for condition in conditions:
        if condition.id in seen:
            raise SuiteError(f"{path}: condition {condition.id!r}: field 'id': used twice")
        seen.add(condition.id)
    digest = hashlib.sha256(canonical_json([c.spec for c in conditions]).encode()).hexdigest()
    return Suite(name=path.stem, path=path, description=description, conditions=conditions, hash=digest)


CONDITION_TYPES: dict[str, type[Condition]] = {cls.op: cls for cls in (Identity, Shift, Brightness, Contrast, Style,
                                                                        Dir, Corruption, CBarCorruption,
                                                                        Perturbation)}
"""The condition class of each ``op`` of a suite file."""


def canonical_json(specs: list[dict]) -> str:
    """The canonical text of condition specs: sorted keys, no whitespace (what a suite's hash covers)."""
    return json.dumps(specs, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
