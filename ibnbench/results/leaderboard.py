"""Leaderboards: records under ``leaderboards/records/`` become ``leaderboards/<suite>.md`` (classification)
and ``segmentation.md`` beside them (segmentation records)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from tabulate import tabulate

from ibnbench.errors import RecordError
from ibnbench.io import write_atomic
from ibnbench.results.loading import load_by_task, require_mergeable, results_frame
from ibnbench.results.pairs import cell_interval
from ibnbench.results.record import Record, condition_labels, file_name

from . import imagenet_c, imagenet_p, paper, segmentation_board

REFERENCE = "paper"  # the board of the paper's tables: paper.md


def _model_groups(records: list[Record]):
    """``(dataset, model, rows)`` per dataset fingerprint (records grouped first, so numbers from different data
    are never ranked together and a model run on two datasets keeps both) and per model, in record order."""
    by_dataset: dict[str, list[Record]] = {}
    for record in records:
        by_dataset.setdefault(str(record.dataset.get("sha256", "")), []).append(record)
    for dataset, chosen in by_dataset.items():
        require_mergeable(chosen)
        for model, group in results_frame(chosen).groupby("model", sort=False):
            yield dataset, model, group


def _identity(dataset: str, model: str, group: pd.DataFrame) -> dict:
    """A board row's first columns: which model, weights, data and date."""
    first = group.iloc[0]
    return {"model": model, "weights": first.weights_sha256, "dataset": f"{dataset[:8]} ({first.n_dataset})",
            "subset": "yes" if first.subset else "no", "date": str(first.created)[:10]}


def _tables(rows: list[tuple[str, dict]], by: list[str], **sort) -> list[pd.DataFrame]:
    """``(dataset, row)`` pairs as one table per dataset, sorted ``by``."""
    tables: dict[str, list[dict]] = {}
    for dataset, row in rows:
        tables.setdefault(dataset, []).append(row)
    return [pd.DataFrame(part).sort_values(by, **sort) for part in tables.values()]


def board_frames(records: list[Record]) -> list[pd.DataFrame]:
    """One ranked table per dataset fingerprint: a row per model with its weights, dataset, subset flag, date,
    mean top-1 drop and top-1/top-5 cell per condition."""
    labels = condition_labels(records)
    order = list(condition_labels(records))
    rows = []
    for dataset, model, group in _model_groups(records):
        by_cond = group.set_index("condition")
        drops = by_cond.drop(index="origin", errors="ignore").drop_top1
        row = {**_identity(dataset, model, group),
               "mean drop top1": round(float(drops.mean()), 2) if len(drops) else float("nan")}
        for cond in order:
            row[labels[cond]] = _cell(by_cond.loc[cond]) if cond in by_cond.index else "-"
        rows.append((dataset, row))
    return _tables(rows, ["mean drop top1", "model"])


def _board(records: list[Record]) -> str:
    """One markdown section per dataset fingerprint."""
    return "\n\n".join(tabulate(table, headers="keys", tablefmt="github", showindex=False)
                        for table in board_frames(records))


def paper_tables() -> str:
    """The paper's Tables 1-5 as transcribed in ``ibnbench/reference/ibn_net_paper.toml``."""
    return "\n\n".join(f"## {title}\n\n" + tabulate(paper.table(n), headers="keys", tablefmt="github")
                       for n, title in paper.titles().items())


def _cell(row: pd.Series) -> str:
    """``28.00 [19.5, 37.9] / 12.00 [6.4, 20.0]``: each error with its Clopper-Pearson 95% interval."""
    parts = []
    for metric in ("top1", "top5"):
        lo, hi = cell_interval(row, metric)
        parts.append(f"{row[f'{metric}_err']:.2f} [{100 * lo:.1f}, {100 * hi:.1f}]")
    return " / ".join(parts)


def _markdown(tables: list[pd.DataFrame]) -> str:
    """Score tables (numbers to 2 decimals, '-' where not defined: None or NaN) as markdown, one after another."""
    return "\n\n".join(tabulate(table.astype(object).where(table.notna(), None), headers="keys", tablefmt="github",
                                showindex=False, floatfmt=".2f", missingval="-") for table in tables)


def _imagenet_c_board(records: list[Record]) -> str:
    """ImageNet-C records ranked by mCE (lowest first), one section per dataset fingerprint."""
    rows = []
    for dataset, model, group in _model_groups(records):
        result = imagenet_c.scores(dict(zip(group.condition, group.top1_err)))
        row = {**_identity(dataset, model, group),
               imagenet_c.MCE: result["mce"], imagenet_c.RELATIVE_MCE: result["relative_mce"],
               imagenet_c.MEAN_ERROR: result["mean_error"], imagenet_c.CLEAN_ERROR: result["clean_error"]}
        row.update({f"CE {imagenet_c.LABELS[n]}": result["ce"].get(n) for n in imagenet_c.ALEXNET_ERRORS})
        rows.append((dataset, row))
    return _markdown(_tables(rows, [imagenet_c.MCE, "model"], na_position="last"))


C_BAR_BASELINE = Path("baselines") / "imagenet-c-bar.toml"
"""Where, under the leaderboard folder, ImageNet-C-bar's baseline constants are read from when present (the
``--baseline-constants`` format): the C-bar board then shows CE-bar and mCE-bar."""


def c_bar_normaliser_at(root: str | Path) -> dict[str, float] | None:
    """The C-bar baseline constants of the leaderboard folder ``root`` (:data:`C_BAR_BASELINE`), None without."""
    path = Path(root) / C_BAR_BASELINE
    return imagenet_c.c_bar_constants(str(path)).tables.get("errors", {}) if path.is_file() else None


def c_bar_frames(records: list[Record], normaliser: dict[str, float] | None) -> list[pd.DataFrame]:
    """ImageNet-C-bar records, one table per dataset fingerprint: a row per model ranked by mCE-bar when a
    ``normaliser`` (baseline constants) is given, else by the unnormalised mean error (lowest first), with the mean
    error per corruption (and CE-bar per corruption)."""
    rows = []
    for dataset, model, group in _model_groups(records):
        result = imagenet_c.c_bar_scores(dict(zip(group.condition, group.top1_err)), normaliser)
        row = {**_identity(dataset, model, group)}
        if normaliser is not None:
            row[imagenet_c.MCE_BAR] = result["mce_bar"]
        row.update({imagenet_c.MEAN_ERROR_BAR: result["mean_error_bar"], imagenet_c.CLEAN_ERROR: result["clean_error"]})
        labels = imagenet_c.C_BAR_LABELS
        row.update({f"{labels[n]} (mean)": result["mean_error"].get(n) for n in imagenet_c.C_BAR_NAMES})
        if normaliser is not None:
            row.update({f"CE-bar {labels[n]}": result["ce"].get(n) for n in imagenet_c.C_BAR_NAMES})
        rows.append((dataset, row))
    by = [imagenet_c.MCE_BAR if normaliser is not None else imagenet_c.MEAN_ERROR_BAR, "model"]
    return _tables(rows, by, na_position="last")


P_BASELINE = Path("baselines") / "imagenet-p.toml"
"""Where, under the leaderboard folder, ImageNet-P's baseline constants are read from when present (the
``--baseline-constants`` format): the boards at their difficulty (any, when the file names none) then show FR, mFR
and mT5D."""
P_RANKING = ("mFR %", "mean FP %")  # the ImageNet-P board's ranking column with and without a baseline


def p_constants_at(root: str | Path) -> Path | None:
    """The ImageNet-P baseline constants file of the leaderboard folder ``root`` (:data:`P_BASELINE`), None
    without."""
    path = Path(root) / P_BASELINE
    return path if path.is_file() else None


def p_frames(records: list[Record], constants: Path | None) -> list[pd.DataFrame]:
    """ImageNet-P records, one table per difficulty and dataset fingerprint (records at different difficulties are
    never ranked together): a row per model with its difficulty, unnormalised mean FP (%) and T5D and FP per
    perturbation, ranked by the mean FP (lowest first); where the ``constants`` file applies to the difficulty
    (:func:`~ibnbench.results.imagenet_p.board_baseline`), with mFR and mT5D first and FR per perturbation, ranked by
    mFR."""
    by_difficulty: dict[int, list[Record]] = {}
    for record in records:
        by_difficulty.setdefault(imagenet_p.difficulty_of([record]), []).append(record)
    tables = []
    for difficulty, chosen in sorted(by_difficulty.items()):
        baseline = imagenet_p.board_baseline(constants, difficulty) if constants is not None else None
        found: dict[str, imagenet_p.Scores] = {}
        rows = []
        for dataset, model, group in _model_groups(chosen):
            if dataset not in found:
                same_data = [r for r in chosen if str(r.dataset.get("sha256", "")) == dataset]
                found[dataset] = imagenet_p.scores(same_data)[0]
            summary = imagenet_p.summary_table(found[dataset], baseline).loc[model]
            means = summary[[*summary.index[2:], *summary.index[:2]]].to_dict()  # mFR and mT5D first, if there
            rows.append((dataset, {**_identity(dataset, model, group), "difficulty": difficulty, **means,
                                   **imagenet_p.perturbation_columns(found[dataset][model], baseline)}))
        tables += _tables(rows, [P_RANKING[baseline is None], "model"], na_position="last")
    return tables


def _how(chosen: list[Record], root: Path) -> tuple[str, str]:
    """How a suite's board is ranked (the sentence) and which board it is: "c", "c-bar", "p" or the plain one."""
    baseline = root / C_BAR_BASELINE
    if imagenet_p.is_imagenet_p(chosen):
        normalised = (f"ranked by mFR (FR: FP / the baseline's in `{P_BASELINE.name}`; mFR and mT5D: means of FR "
                      "and the T5D ratio over the 10 test perturbations, '-' unless all 10 ran) where the constants "
                      "are at the table's difficulty, else" if p_constants_at(root) else
                      f"no mFR (put baseline constants in `{P_BASELINE.as_posix()}`):")
        return (f"One table per difficulty and dataset, never ranked together; FP: flip probability % per "
                f"perturbation, T5D: top-5 distance; {normalised} ranked by the unnormalised mean FP over the test "
                "perturbations run.", "p")
    if imagenet_c.is_imagenet_c(chosen):
        return ("Cells: %; ranked by mCE (CE: top-1 error summed over the 5 severities / AlexNet's; mCE: mean CE "
                "over the 15 corruptions, '-' unless all 15 x 5 ran). The unnormalised mean error is not an mCE.", "c")
    if imagenet_c.is_imagenet_c_bar(chosen):
        normalised = (f"ranked by mCE-bar (CE-bar: top-1 error summed over the 5 severities / the baseline's in "
                      f"`{baseline.name}`; '-' unless all 10 x 5 ran)" if baseline.is_file() else
                      f"ranked by the unnormalised mean error (no mCE-bar: put baseline constants in "
                      f"`{C_BAR_BASELINE.as_posix()}`)")
        return f"Cells: top-1 error %; {normalised}; '(mean)': the mean error per corruption.", "c-bar"
    return ("Cells: top-1 / top-5 error % with 95% Clopper-Pearson intervals in brackets; sorted by mean top-1 drop "
            "against origin.", "")


def _suite_board(chosen: list[Record], kind: str, root: Path) -> str:
    """The board of one suite's records (``kind`` from :func:`_how`) in the leaderboard folder ``root``."""
    if kind == "c":
        return _imagenet_c_board(chosen)
    if kind == "p":
        return _markdown(p_frames(chosen, p_constants_at(root)))
    if kind == "c-bar":
        return _markdown(c_bar_frames(chosen, c_bar_normaliser_at(root)))
    return _board(chosen)


def build(root: str | Path = "leaderboards") -> list[Path]:
    """Write one ``<suite>.md`` per suite of the classification records found in ``root/records``,
    ``segmentation.md`` for the segmentation records there, and ``paper.md``; returns the files."""
    root = Path(root)
    records, segmentation = load_by_task([root / "records"])
    written = []
    for suite in sorted({r.suite for r in records}):
        chosen = [r for r in records if r.suite == suite]
        hashes = sorted({r.suite_hash[:12] for r in chosen})
        how, kind = _how(chosen, root)
        text = (f"# Leaderboard: suite `{suite}`\n\nGenerated by `ibnbench leaderboard build` from "
                f"`{root.name}/records/`. {how} "
                f"Suite hash(es): {', '.join(hashes)}. Rows marked subset ran on fewer than 50,000 images and are "
                "not comparable with full-set numbers.\n\n" + _suite_board(chosen, kind, root)
                + "\n")
        if suite in (REFERENCE, segmentation_board.BOARD):
            board = "the paper's tables" if suite == REFERENCE else "the segmentation board"
            raise RecordError(f"{chosen[0].path}: suite name {suite!r} would overwrite {board} ({suite}.md)")
        path = root / f"{file_name(suite, 'suite name', chosen[0].path)}.md"
        write_atomic(path, text)
        written.append(path)
    if segmentation:
        path = root / f"{segmentation_board.BOARD}.md"
        write_atomic(path, segmentation_board.board_markdown(segmentation, root.name))
        written.append(path)
    reference = root / f"{REFERENCE}.md"
    write_atomic(reference, "# IBN-Net paper, Tables 1-5 (reference)\n\nTop-1/top-5 error % on the full ImageNet "
                 "val set (Pan et al., ECCV 2018); in brackets the drop against origin (Tables 1, 3) or the gain "
                 "over the re-implementation (Table 2). Each cell's implementation is named in "
                 "`ibnbench/reference/ibn_net_paper.toml`.\n\n" + paper_tables() + "\n")
    written.append(reference)
    return written
