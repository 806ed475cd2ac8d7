"""Whether two records' numbers may be put side by side (``check``, ``compare``, ``report``): their benchmark
generators first (:mod:`ibnbench.conditions.benchmark_generator`: on the fly vs the released files, with or without
the JPEG round trip, another reference), then :meth:`~ibnbench.results.record.Record.comparable_with` (suite
definition, data, class subset, preprocessing).

Records whose generators differ are refused with one line naming both, unless the caller allows the mismatch
(``--allow-generator-mismatch``): then they are compared by suite name and by their images' names and labels (the
suite definitions and the data fingerprints differ by construction, e.g. the released files' sizes), with a warning
line. A record that names no generator (written before records named them) is compared as before, with a note.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ibnbench.conditions.benchmark_generator import describe
from ibnbench.results.record import Record

ALLOW_FLAG = "--allow-generator-mismatch"


@dataclass(frozen=True)
class Comparability:
    """``reasons`` why two records must not be compared (empty: they may be); ``warnings``, lines to show beside
    the comparison."""

    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _name(record: Record, fallback: str) -> str:
    return record.path or fallback


def generator_differences(a: Record, b: Record) -> list[str]:
    """Per benchmark both records name, how their generators differ (the ibnbench version aside):
    ``"imagenet-c: <a's> vs <b's>"``; empty when they agree or either names none."""
    differences = []
    for benchmark in a.generator.keys() & b.generator.keys():
        ours, theirs = a.generator[benchmark], b.generator[benchmark]
        if {k: v for k, v in ours.items() if k != "ibnbench"} != {k: v for k, v in theirs.items() if k != "ibnbench"}:
            differences.append(f"{describe(ours)} vs {describe(theirs)}")
    return sorted(differences)


def comparability(a: Record, b: Record, allow_generator_mismatch: bool = False) -> Comparability:
    """Whether ``a`` and ``b`` may be compared (see the module's docstring)."""
    differences = generator_differences(a, b)
    if differences and not allow_generator_mismatch:
        return Comparability([f"generators differ: {'; '.join(differences)} (images made otherwise give other "
                              f"numbers; pass {ALLOW_FLAG} to compare them anyway)"])
    if differences:
        return Comparability(a.comparable_with(b, by_name=True),
                             [f"warning: generators differ: {'; '.join(differences)}; compared anyway "
                              f"({ALLOW_FLAG}), by suite name and image names"])
    unknown = [_name(r, name) for r, name in ((a, "A"), (b, "B")) if not r.generator]
    notes = [f"note: {unknown[0]} names no generator (written before records named them): its images are taken to "
             "be made as the other's"] if len(unknown) == 1 else []
    return Comparability(a.comparable_with(b), notes)
