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
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ibnbench.conditions.suite import read_suite, shipped_suites
from ibnbench.errors import FileWriteError, MissingFileError, RecordError, UnknownModelError, UsageError
from ibnbench.io import make_folder, write_json_atomic
from ibnbench.results import paper
from ibnbench.results.imagenet_c import is_imagenet_c_bar
from ibnbench.results.imagenet_p import is_imagenet_p, model_table, scores
from ibnbench.results.leaderboard import (
    P_BASELINE,
    board_frames,
    c_bar_frames,
    c_bar_normaliser_at,
    p_constants_at,
    p_frames,
)
from ibnbench.results.loading import load_by_task
from ibnbench.results.plots import SWEEP_SUITES, plot_drops, plot_fp, plot_sweep
from ibnbench.results.record import Record
from ibnbench.results.report import table1
from ibnbench.results.segmentation_board import NOTE, paper_sections, sections
from ibnbench.results.segmentation_record import SegmentationRecord
from ibnbench.results.segmentation_report import summary
from ibnbench.zoo import model_info

RESULT_COLUMNS = ["suite", "model", "dataset", "subset", "date", "mean drop top1"]  # the index's table of results
FOLDERS = ("suites", "models", "records")  # the site's own folders
MANIFEST = ".ibnbench-site.json"  # what the last build wrote: the only files a rebuild may replace or remove


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
    if is_imagenet_p(records):
        jobs = [(plot_fp, records, "fp", "ImageNet-P flip probability per perturbation with its Clopper-Pearson "
                                         "95% interval")]
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


SCORES = {  # benchmark: (heading, explanation) of a suite page's scores section
    "c-bar": ("ImageNet-C-bar scores", "Top-1 error %: the mean over the C-bar cells run and the mean per corruption "
              "over its severities; CE-bar and mCE-bar (ranked by) when the leaderboard folder holds baseline "
              "constants (baselines/imagenet-c-bar.toml), else ranked by the mean error."),
    "p": ("ImageNet-P scores", "One table per difficulty and dataset, never ranked together. FP: flip probability % "
          "per perturbation; mean FP and T5D (top-5 distance) over the test perturbations run, unnormalised (ranked "
          "by the mean FP); FR per perturbation, mFR and mT5D (ranked by mFR) when the leaderboard folder holds "
          f"baseline constants ({P_BASELINE.as_posix()}) at the table's difficulty."),
}


def _scores(suite: str, chosen: list[Record], root: Path | None) -> dict | None:
    """A suite page's scores section (heading, explanation, tables) for ImageNet-C-bar records (mean error per
    corruption; mCE-bar) and ImageNet-P records (FP per perturbation; mFR), normalised by the baseline constants of
    the leaderboard folder ``root`` when it holds them; None for other records."""
    if is_imagenet_c_bar(chosen):
        kind, frames = "c-bar", c_bar_frames(chosen, c_bar_normaliser_at(root) if root is not None else None)
    elif is_imagenet_p(chosen):
        kind, frames = "p", p_frames(chosen, p_constants_at(root) if root is not None else None)
    else:
        return None
    heading, explanation = SCORES[kind]
    return {"id": f"{kind}-scores", "heading": heading, "explanation": explanation,
            "tables": [_table(frame, f"{suite}: {heading}, dataset {frame.dataset.iloc[0]}"
                              + (f", difficulty {frame.difficulty.iloc[0]}" if "difficulty" in frame else ""),
                              families=[family(m) for m in frame.model]) for frame in frames]}


def _suite_context(suite: str, chosen: list[Record], root: Path | None = None) -> dict:
    """What the page of one suite shows: its overview, its board tables (full set and subsets apart), ImageNet-C-bar
    or ImageNet-P scores (:func:`_scores`) and families; ``rows`` are the board rows in the index's shorter form."""
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
            "scores": _scores(suite, chosen, root),
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
                         "numbers": _numbers(own, model),
                         "figures": figures, "notes": notes,
                         "provenance": _provenance(record, model), "record": names[id(record)]})
    return sections


def _numbers(record: Record, model: str) -> dict:
    """A model page's table for one record of ``model``: ImageNet-P's FP (with its interval) and T5D per
    perturbation, else the Table-1 cells beside the paper's."""
    if is_imagenet_p([record]):
        return _table(model_table(scores([record])[0][model], None),
                      "ImageNet-P: flip probability % (95% interval) and top-5 distance per perturbation",
                      "perturbation")
    return _table(table1([record], vs="paper"), "Top-1/top-5 error % (drop against origin)", "condition")


def build_site(records_dir: str | Path | Sequence[str | Path], out: str | Path) -> list[Path]:
    """Write the static leaderboard site for the records under ``records_dir`` (files or folders) into ``out``;
    returns the pages. The site is built aside and then moved in; ``out/.ibnbench-site.json`` lists what the
    build wrote, so that a rebuild replaces those files and removes the ones it no longer writes (pages of models
    no longer in the records) and never touches, overwrites or deletes anything else in ``out``."""
    sources = [records_dir] if isinstance(records_dir, (str, Path)) else list(records_dir)
    records, segmentation = load_by_task(sources)
    out = Path(out)
    inside = [r.path for r in [*records, *segmentation] if out.resolve() in Path(r.path).resolve().parents]
    if inside:
        raise UsageError(f"{out}: the site folder holds the records it is built from ({inside[0]}); "
                         "choose another folder, e.g. site/")
    around = [s for s in sources if Path(s).resolve() in (out.resolve(), *out.resolve().parents)]
    if around:
        raise UsageError(f"{out}: the site folder lies inside the records folder {around[0]} (its copies of the "
                         "records would be read as records by the next build); choose another folder, e.g. site/")
    make_folder(out, "site folder")
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=out))
    try:
        pages = _write_site(records, staging, Path(sources[0]).parent if len(sources) == 1 else None, segmentation)
        _move_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / page.relative_to(staging) for page in pages]


def _write_site(records: list[Record], out: Path, board_root: Path | None = None,
                segmentation: Sequence[SegmentationRecord] = ()) -> list[Path]:
    """Every file of the site into the empty folder ``out``; returns the pages. ``board_root``: the leaderboard
    folder (the records' parent), where baseline constants are looked up; ``segmentation``: segmentation records,
    on a page of their own (:func:`_segmentation_pages`)."""
    for folder in FOLDERS:
        (out / folder).mkdir()
    env = _environment()
    names = _publish_records([*records, *segmentation], out / "records")

    def page(path: str, template: str, **context) -> Path:
        target = out / path
        target.write_text(env.get_template(template).render(root="../" * path.count("/"), **context),
                          encoding="utf-8")
        return target

    pages, rows, suites = [], [], []
    for suite in sorted({r.suite for r in records}):
        context = _suite_context(suite, [r for r in records if r.suite == suite], board_root)
        rows += context.pop("rows")
        suites.append(context["suite"])
        pages.append(page(f"suites/{slug(suite)}.html", "suite.html", **context))
    models = sorted({m for r in records for m in r.models})
    for model in models:
        sections = _model_sections(model, records, out / "models", names)
        pages.append(page(f"models/{slug(model)}.html", "model.html", model=model, family=family(model),
                          sections=sections))
    if segmentation:
        pages += _segmentation_pages(list(segmentation), names, page)
    pages.append(page("paper.html", "paper.html", tables=[
        _table(paper.table(n), title, index="row") for n, title in paper.titles().items()]))
    results = {"caption": "Every result: one row per suite, dataset and model", "columns": RESULT_COLUMNS,
               "rows": rows}
    pages.append(page("index.html", "index.html", suites=suites, results=results, models=models,
                      families=sorted({r["family"] for r in rows}),
                      segmentation_models=sorted({m for r in segmentation for m in r.models})))
    return pages


def _segmentation_pages(records: list[SegmentationRecord], names: dict[int, str], page) -> list[Path]:
    """``segmentation.html`` (the board's tables, the published numbers) and a page per segmentation model (its
    runs' summary, provenance and record), written with ``page(path, template, **context)``."""
    tables = [_table(table, title, index=table.index.name or "model") for title, table in sections(records)]
    published = [{**_table(table, title, index="model (source's name)"), "source": source}
                 for title, source, table in paper_sections()]
    pages = [page("segmentation.html", "segmentation.html", tables=tables, published=published, note=NOTE,
                  records=len(records))]
    for model in sorted({m for r in records for m in r.models}):
        runs = []
        for record in (r for r in records if model in r.models):
            own = dataclasses.replace(record, results=[row for row in record.results if row["model"] == model])
            runs.append({"numbers": _table(summary([own]), f"{model}: mIoU % [95% interval] / pixel accuracy % "
                                           "(mIoU drop against origin)", "condition / dataset"),
                         "suite": record.suite, "record": names[id(record)],
                         "provenance": _segmentation_provenance(record, model)})
        pages.append(page(f"models/{slug(model)}.html", "segmentation_model.html", model=model, family=family(model),
                          runs=runs))
    return pages


def _segmentation_provenance(record: SegmentationRecord, model: str) -> list[tuple[str, str]]:
    env, weights = record.environment, record.models.get(model, {})
    return [("weights", f"{weights.get('weights', '?')}, sha256 {weights.get('sha256') or 'none (random)'}"),
            ("datasets", "; ".join(f"{name}: fingerprint {d.get('sha256', '?')}"
                                   for name, d in record.datasets.items())),
            ("suite", f"{record.suite}, sha256 {record.suite_hash}"),
            ("inference", ", ".join(f"{k} {v}" for k, v in record.inference.items())),
            ("environment", ", ".join(f"{k} {env[k]}" for k in ("ibnbench", "torch", "device_name", "dtype")
                                      if k in env)),
            ("date", record.created or "?")]


def _previous_build(out: Path) -> set[str]:
    """The files (relative paths) the last build wrote into ``out``, from its manifest; none without one."""
    manifest = out / MANIFEST
    if not manifest.exists():
        return set()
    try:
        listed = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{manifest}: unreadable site manifest ({exc}); remove it and the site it lists") from None
    inside = out.resolve()
    if not isinstance(listed, list) or not all(
            isinstance(name, str) and inside in (out / name).resolve().parents for name in listed):
        raise UsageError(f"{manifest}: not a site manifest (a list of files inside {out}); remove it and the site "
                         "it lists")
    return set(listed)


def _move_in(staging: Path, out: Path) -> None:
    """Move the built files from ``staging`` into ``out``, remove the files of the previous build it no longer
    writes and record the new list; a file in the way that the previous build did not write is refused first."""
    written = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    before = _previous_build(out)
    foreign = [name for name in written if name not in before and (out / name).exists()]
    if foreign:
        raise UsageError(f"{out / foreign[0]}: exists and was not written by `ibnbench leaderboard build` (not in "
                         f"{out / MANIFEST}); move it away or build into another folder")
    write_json_atomic(out / MANIFEST, sorted(before | set(written)), what="site manifest")  # true if cut short
    try:
        for name in written:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, out / name)
        for name in sorted(before - set(written)):
            (out / name).unlink(missing_ok=True)
    except OSError as exc:
        raise FileWriteError(f"cannot write site {out}: {exc.strerror or exc} ({exc.filename})") from None
    write_json_atomic(out / MANIFEST, written, what="site manifest")


def make_server(directory: str | Path, port: int = 8000) -> http.server.ThreadingHTTPServer:
    """An HTTP server for ``directory`` on 127.0.0.1 (``port`` 0: any free port), not yet serving."""
    directory = Path(directory)
    if not (directory / "index.html").is_file():
        raise MissingFileError(f"{directory}: no index.html (build the site with `ibnbench leaderboard build --html "
                                f"{directory}` first)")
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: a port lies between 0 (any free port) and 65535")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    try:
        return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise UsageError(f"--port {port}: cannot serve on 127.0.0.1:{port} ({exc.strerror or exc}); choose another "
                         "port (0: any free one)") from None


def serve(directory: str | Path, port: int = 8000) -> None:
    """Preview the site at http://127.0.0.1:PORT/ until interrupted."""
    with make_server(directory, port) as server:
        print(f"serving {directory} at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)")
        server.serve_forever()
