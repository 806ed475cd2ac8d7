"""Argparse ``type=`` functions for numeric options: a value out of range stops the command at parsing, with
argparse's one-line ``ibnbench CMD: error: argument --OPTION: ...`` (exit 2), before any work."""
from __future__ import annotations

import argparse
import math


def _number(text: str, kind: type) -> float | int:
    try:
        return kind(text)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {noun}, not {text!r}") from None


def finite_float(text: str) -> float:
    """A finite number (``nan``, ``inf`` refused)."""
    value = _number(text, float)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, not {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {text!r}")
    return value


def probability(text: str) -> float:
    """A number strictly between 0 and 1 (a significance level)."""
    value = finite_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, not {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {text!r}")
    return value


def port(text: str) -> int:
    """A TCP port, 0 (any free port) to 65535."""
    value = _number(text, int)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port lies between 0 (any free port) and 65535, not {text!r}")
    return value


def seed(text: str) -> int:
    """A random seed, 0 to 2**32 - 1."""
    value = _number(text, int)
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(f"a seed lies between 0 and 4294967295, not {text!r}")
    return value


def non_empty_path(text: str) -> str:
    """A file or folder path (or a name); an empty or blank one is refused (it would silently mean the current
    folder, or the option left out)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, not an empty string")
    return text
