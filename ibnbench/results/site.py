"""The leaderboard as a static website: an index of suites, a sortable table per suite and a page per model.

Pages hold only what :mod:`~ibnbench.results.leaderboard`, :mod:`~ibnbench.results.report` and
:mod:`~ibnbench.results.plots` compute (one source of truth), rendered with the Jinja2 templates in
``ibnbench/results/templates``. The site is plain files: it works
from ``file://`` and any static host, makes no network request (CSS and JS inline, figures are matplotlib SVGs
beside the pages) and links every record JSON it was built from.
"""
from __future__ import annotations

import dataclasses
import functools
import http.server
import math
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ibnbench.conditions.suite import read_suite, shipped_suites
from ibnbench.errors import MissingFileError, RecordError, UnknownModelError, UsageError
from ibnbench.results import paper
from ibnbench.results.leaderboard import board_frames
from ibnbench.results.plots import SWEEP_SUITES, plot_drops, plot_sweep
from ibnbench.results.record import Record
from ibnbench.results.report import load_records, table1
from ibnbench.zoo import model_info

RESULT_COLUMNS = ["suite", "model", "dataset", "subset", "date", "mean drop top1"]  # the index's table of results
FOLDERS = ("suites", "models", "records")  # the site's own folders: a build removes files there it did not write


def slug(name: str) -> str:
    """A file name for a model or suite name (``timm:resnet50.a1`` -> ``timm_resnet50.a1``)."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or "unnamed"


def family(model: str) -> str:
    """The model's family for the filter: the registry's family (with its IBN variant); ``timm``, ``torchvision``
    or ``external`` for external specs (never imported here); ``other`` for names the registry does not know."""
    if ":" in model:
        prefix = model.split(":", 1)[0]
        return prefix if prefix in ("timm", "torchvision") else "external"
    try:
        info = model_info(model)
    except UnknownModelError:
        return "other"
    return f"{info.family} {info.variant}" if info.variant not in (None, "", "none") else str(info.family)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def _table(frame: pd.DataFrame, caption: str, index: str | None = None,
           families: Sequence[str] | None = None) -> dict:
    """A DataFrame as the templates' table: ``caption``, ``columns`` and ``rows`` (``cells`` as strings, and the
    model ``family`` for the filter when given); the index, if named by ``index``, becomes the first column."""
    if index is not None:
        frame = frame.rename_axis(index).reset_index()
    rows = [{"cells": [_cell(v) for v in row]} for row in frame.itertuples(index=False)]
    for row, name in zip(rows, families or []):
        row["family"] = name
    return {"caption": caption, "columns": [str(c) for c in frame.columns], "rows": rows}


def _only(record: Record, model: str) -> Record:
    """``record`` restricted to one model's results."""
    return dataclasses.replace(record, models={model: record.models[model]},
                               results=[r for r in record.results if r["model"] == model])


def _figures(records: list[Record], folder: Path, stem: str) -> tuple[list[dict], list[str]]:
    """Drop bars (and severity curves for sweep suites) as SVGs in ``folder``; what could not be drawn, and why."""
    figures, notes = [], []
    jobs = [(plot_drops, [r for r in records if r.suite not in SWEEP_SUITES], "drops",
             "Error increase over origin per condition, top-1 and top-5 panels"),
            (plot_sweep, [r for r in records if r.suite in SWEEP_SUITES], "curves",
             "Top-1 error against severity, one panel per condition family")]
    for plot, chosen, kind, alt in jobs:
        if not chosen:
            continue
        try:
            path = plot(chosen, folder / f"{stem}-{kind}.svg")
        except RecordError as exc:
            notes.append(f"no {kind} figure: {exc}")
            continue
        figures.append({"src": path.name, "alt": alt})
    return figures, notes


def _provenance(record: Record, model: str) -> list[tuple[str, str]]:
    env, ds, weights = record.environment, record.dataset, record.models.get(model, {})
    return [
        ("weights", f"{weights.get('weights', '?')}, sha256 {weights.get('sha256') or 'none (random)'}"),
        ("dataset", f"fingerprint {ds.get('sha256', '?')}, {ds.get('n_images')} images"
                    + (" (subset: not comparable with full-set numbers)" if ds.get("subset") else " (full set)")),
        ("suite", f"{record.suite}, sha256 {record.suite_hash}"),
        ("environment", ", ".join(f"{k} {env[k]}" for k in ("ibnbench", "torch", "torchvision", "device_name",
                                                             "dtype", "batch_size") if k in env)),
        ("date", record.created or "?"),
    ]


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("ibnbench.results", "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["slug"] = slug
    return env


def _publish_records(records: list[Record], folder: Path) -> dict[int, str]:
    """Copy each record's JSON into ``folder`` under a unique name; returns the names by ``id(record)``."""
    names: dict[int, str] = {}
    for record in records:
        name = Path(record.path).name
        while name in names.values():
            name = f"{Path(name).stem}-1.json"
        names[id(record)] = name
        shutil.copyfile(record.path, folder / name)
    return names


def _suite_context(suite: str, chosen: list[Record]) -> dict:
    """What the page of one suite shows: its overview, its board tables (full set and subsets apart) and
    families; ``rows`` are the board rows in the index's shorter form."""
    tables, rows = [], []
    for frame in board_frames(chosen):
        families = [family(m) for m in frame.model]
        table = _table(frame, f"{suite}: dataset {frame.dataset.iloc[0]}", families=families)
        tables.append({**table, "subset": frame.subset.iloc[0] == "yes", "families": families})
        rows += _table(frame[RESULT_COLUMNS[1:]].assign(suite=suite)[RESULT_COLUMNS], "", families=families)["rows"]
    overview = {"name": suite, "description": read_suite(suite).description if suite in shipped_suites() else "",
                "hashes": sorted({r.suite_hash[:12] for r in chosen}),
                "models": len({m for r in chosen for m in r.models}), "records": len(chosen),
                "full": sum(not t["subset"] for t in tables), "subsets": sum(t["subset"] for t in tables)}
    return {"suite": overview, "full": [t for t in tables if not t["subset"]],
            "subsets": [t for t in tables if t["subset"]],
            "families": sorted({f for t in tables for f in t["families"]}), "rows": rows}


def _model_sections(model: str, records: list[Record], folder: Path, names: dict[int, str]) -> list[dict]:
    """One section per record holding ``model``: its Table-1 cells beside the paper's, figures (written
    to ``folder``), provenance and the published record's name."""
    sections = []
    for record in sorted((r for r in records if model in r.models), key=lambda r: r.suite):
        own = _only(record, model)
        figures, notes = _figures([own], folder, f"{slug(model)}-{Path(names[id(record)]).stem}")
        sections.append({"suite": record.suite, "n_images": record.dataset.get("n_images"),
                         "subset": bool(record.dataset.get("subset", True)),
                         "numbers": _table(table1([own], vs="paper"), "Top-1/top-5 error % (drop against origin)",
                                           "condition"),
                         "figures": figures, "notes": notes,
                         "provenance": _provenance(record, model), "record": names[id(record)]})
    return sections


def build_site(records_dir: str | Path | Sequence[str | Path], out: str | Path) -> list[Path]:
    """Write the static leaderboard site for the records under ``records_dir`` (files or folders) into ``out``;
    returns the pages. Files in ``out``'s own folders (suites/, models/, records/) that this build did not write,
    such as the pages of models no longer in the records, are removed."""
    sources = [records_dir] if isinstance(records_dir, (str, Path)) else list(records_dir)
    records = load_records(sources)
    out = Path(out)
    inside = [r.path for r in records if out.resolve() in Path(r.path).resolve().parents]
    if inside:
        raise UsageError(f"{out}: the site folder holds the records it is built from ({inside[0]}); "
                         "choose another folder, e.g. site/")
    for folder in FOLDERS:
        (out / folder).mkdir(parents=True, exist_ok=True)
    env = _environment()
    names = _publish_records(records, out / "records")

    def page(path: str, template: str, **context) -> Path:
        target = out / path
        target.write_text(env.get_template(template).render(root="../" * path.count("/"), **context),
                          encoding="utf-8")
        return target

    pages, rows, suites = [], [], []
    for suite in sorted({r.suite for r in records}):
        context = _suite_context(suite, [r for r in records if r.suite == suite])
        rows += context.pop("rows")
        suites.append(context["suite"])
        pages.append(page(f"suites/{slug(suite)}.html", "suite.html", **context))
    models = sorted({m for r in records for m in r.models})
    figures = []
    for model in models:
        sections = _model_sections(model, records, out / "models", names)
        figures += [out / "models" / f["src"] for s in sections for f in s["figures"]]
        pages.append(page(f"models/{slug(model)}.html", "model.html", model=model, family=family(model),
                          sections=sections))
    pages.append(page("paper.html", "paper.html", tables=[
        _table(paper.table(n), title, index="row") for n, title in paper.titles().items()]))
    results = {"caption": "Every result: one row per suite, dataset and model", "columns": RESULT_COLUMNS,
               "rows": rows}
    pages.append(page("index.html", "index.html", suites=suites, results=results, models=models,
                      families=sorted({r["family"] for r in rows})))
    keep = {*pages, *figures, *(out / "records" / n for n in names.values())}
    for stale in (f for folder in FOLDERS for f in (out / folder).iterdir() if f.is_file() and f not in keep):
        stale.unlink()
    return pages


def make_server(directory: str | Path, port: int = 8000) -> http.server.ThreadingHTTPServer:
    """An HTTP server for ``directory`` on 127.0.0.1 (``port`` 0: any free port), not yet serving."""
    directory = Path(directory)
    if not (directory / "index.html").is_file():
        raise MissingFileError(f"{directory}: no index.html (build the site with `ibnbench leaderboard build --html "
                                f"{directory}` first)")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)


def serve(directory: str | Path, port: int = 8000) -> None:
    """Preview the site at http://127.0.0.1:PORT/ until interrupted."""
    with make_server(directory, port) as server:
        print(f"serving {directory} at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)")
        server.serve_forever()
