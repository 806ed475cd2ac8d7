"""Commands that read records: report, export, robustness, compare, check, leaderboard."""
from __future__ import annotations

import argparse
import sys

from tabulate import tabulate, tabulate_formats

from ibnbench.cli.arguments import non_empty_path, non_negative_float, port, probability

REPORT_FORMATS = ("text", "markdown", "csv", "json", "latex", "html")
"""``ibnbench.results.report.FORMATS``, written out so that building the parser does not import pandas (a test
holds the two equal)."""


def cmd_report(args: argparse.Namespace) -> int:
    """Print (or write) the report of result records, each record file read once for all its parts."""
    from ibnbench.results.loading import load_by_task
    from ibnbench.results.report import paper_warnings, report

    records, segmentation = load_by_task(args.results)
    if segmentation:
        return _report_segmentation(args, records, segmentation)
    if args.released_vs_on_the_fly or args.model:
        return _report_sources(records, args)
    text = report(records, format=args.format, vs=args.vs, output=args.output, ci=args.ci, pairs=args.pairs,
                  baseline=args.baseline, baseline_constants=args.baseline_constants,
                  allow_generator_mismatch=args.allow_generator_mismatch)
    print(text if not args.output else f"wrote {args.output}")
    if args.vs == "paper":
        for warning in paper_warnings(records):
            print(warning, file=sys.stderr)
    if args.plot:
        from ibnbench.results.plots import plot_report

        for path in plot_report(records, args.plot):
            print(f"wrote {path}")
    if args.reliability:
        from ibnbench.results.plots import plot_reliability

        print(f"wrote {plot_reliability(records, args.reliability)}")
    return 0


def _report_segmentation(args: argparse.Namespace, records: list, segmentation: list) -> int:
    """``report`` of segmentation records: their tables (``--vs paper``: beside the published numbers)."""
    from ibnbench.errors import UsageError
    from ibnbench.results.segmentation_board import build_segmentation_report

    if records:
        raise UsageError(f"{records[0].path}: a classification record among segmentation records; report them apart")
    options = {"--ci": args.ci, "--pairs": args.pairs, "--baseline": args.baseline,
               "--baseline-constants": args.baseline_constants, "--plot": args.plot,
               "--reliability": args.reliability, "--allow-generator-mismatch": args.allow_generator_mismatch,
               "--released-vs-on-the-fly": args.released_vs_on_the_fly, "--model": args.model}
    given = [name for name, value in options.items() if value]
    if given:
        raise UsageError(f"{given[0]} applies to classification records; these are segmentation records")
    built = build_segmentation_report(segmentation, vs=args.vs)
    _print_or_write(built.render(args.format), args.output)
    for warning in built.warnings:
        print(warning, file=sys.stderr)
    return 0


SOURCES_ONLY = ("vs", "baseline", "baseline_constants", "plot", "reliability", "ci", "pairs",
                "allow_generator_mismatch")
"""``report`` options that do not apply to ``--released-vs-on-the-fly``."""


def _report_sources(records: list, args: argparse.Namespace) -> int:
    """``report FLY RELEASED --released-vs-on-the-fly [--model M]``: ImageNet-P's FP from both sources."""
    from ibnbench.errors import UsageError
    from ibnbench.results.imagenet_p_sources import sources_report

    if not args.released_vs_on_the_fly:
        raise UsageError("--model applies only with --released-vs-on-the-fly")
    given = [name for name in SOURCES_ONLY if getattr(args, name)]
    if given:
        raise UsageError(f"--{given[0].replace('_', '-')} does not apply to --released-vs-on-the-fly (one model's "
                         "FP from the two sources)")
    _print_or_write(sources_report(records, args.model).render(args.format), args.output)
    return 0


def _print_or_write(text: str, output: str | None) -> None:
    """A rendered report printed, or written to ``output`` (then only its name is printed)."""
    from ibnbench.io import write_atomic

    if output:
        write_atomic(output, text + "\n", what="report")
    print(text if not output else f"wrote {output}")


def cmd_export(args: argparse.Namespace) -> int:
    """Write ImageNet-C or C-bar records in RobustBench's unaggregated_results.csv shape."""
    from ibnbench.io import write_atomic
    from ibnbench.results.loading import load_records
    from ibnbench.results.robustbench import robustbench_csv

    text = robustbench_csv(load_records(args.results), allow_generator_mismatch=args.allow_generator_mismatch)
    if args.output:
        write_atomic(args.output, text, what="export")
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Paired comparison of the models of two records on the same images (McNemar, Holm)."""
    from ibnbench.results.pairs import PAIRS_NOTE, compare
    from ibnbench.results.report import Report, Section

    table, warnings = compare(args.a, args.b, metric=args.metric,
                              allow_generator_mismatch=args.allow_generator_mismatch)
    section = Section("", table, "\n".join([f"A: {args.a}, B: {args.b}. {PAIRS_NOTE}", *warnings]),
                      keys=("condition", "model A", "model B"))
    print(Report((section,), tuple(warnings)).render(args.format))
    for warning in warnings:
        print(warning, file=sys.stderr)
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    """Effective robustness on a shift: each model's distance from the baseline models' logit-linear fit."""
    from ibnbench.results.loading import load_records
    from ibnbench.results.robustness import effective_robustness, plot_effective_robustness

    baseline = [m for spec in args.baseline for m in spec.split(",") if m]
    table, fit = effective_robustness(load_records(args.results), args.shift, baseline, metric=args.metric)
    print(tabulate(table.reset_index(), headers="keys", tablefmt=args.format, showindex=False, floatfmt=".2f"))
    print(f"\nlogit({args.shift} acc) = {fit.slope:.4f} * logit(val acc) {fit.intercept:+.4f} over "
          f"{len(fit.models)} baseline models (r = {fit.r:.4f}); effective robustness = shift acc - predicted acc")
    print(f"95% intervals (er_low, er_high; the line's): {fit.bootstrap.describe()}")
    if args.plot:
        print(f"wrote {plot_effective_robustness(table, fit, args.plot, shift=args.shift, metric=args.metric)}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Compare a new record with a recorded one; exit 0 ok, 1 regression, 2 incomparable."""
    from ibnbench.results.check import check

    outcome = check(args.results, args.against, tolerance=args.tolerance, metric=args.metric,
                    either_way=args.either_way, test=args.test, alpha=args.alpha,
                    allow_generator_mismatch=args.allow_generator_mismatch)
    print(outcome.render())
    return outcome.exit_code


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """Rebuild leaderboards/<suite>.md from leaderboards/records/, or (--html DIR) the static site."""
    if args.html:
        from pathlib import Path

        from ibnbench.results.site import build_site

        pages = build_site(Path(args.root) / "records", args.html)
        print(f"wrote {len(pages)} pages to {args.html}; open {Path(args.html) / 'index.html'} in a browser")
        return 0
    from ibnbench.results.leaderboard import build

    for path in build(args.root):
        print(f"wrote {path}")
    return 0


def cmd_leaderboard_serve(args: argparse.Namespace) -> int:
    """Preview a built site on http://127.0.0.1:PORT/ until Ctrl-C."""
    from ibnbench.results.site import serve

    try:
        serve(args.directory, port=args.port)
    except KeyboardInterrupt:
        print("stopped")
    return 0


def _add_generator_mismatch(p: argparse.ArgumentParser) -> None:
    """``--allow-generator-mismatch`` (report, compare, check)."""
    p.add_argument("--allow-generator-mismatch", action="store_true",
                   help="put records side by side although their ImageNet-C/C-bar/P images were made otherwise (on "
                        "the fly vs the released files, with vs without the JPEG round trip, another reference): "
                        "compared by suite name and image names, with a warning line (refused without it)")


def _add_report(sub: argparse._SubParsersAction) -> None:
    """``ibnbench report``."""
    p = sub.add_parser("report", help="print the Table-1 report of result records")
    p.add_argument("results", nargs="+", metavar="RECORD", type=non_empty_path, help="record files or directories")
    p.add_argument("--format", default="markdown", choices=REPORT_FORMATS,
                   help="markdown (default) or text: tables with titles and notes; latex tables; html: tables with "
                        "headings and notes; csv: numbers, one row per (model, condition) in the main table; json: one "
                        "document of sections (title, note, rows: the main table as numbers) and warnings")
    p.add_argument("--vs", choices=["paper"], help="show the paper's published numbers next to ours, with differences")
    p.add_argument("--baseline", metavar="MODEL",
                   help="ImageNet-C-bar records: normalise by MODEL (a model of the records) into CE-bar per "
                        "corruption and mCE-bar; ImageNet-P records: into FR and T5D ratios per perturbation, mFR and "
                        "mT5D (MODEL evaluated on the same images, e.g. torchvision:alexnet as the paper)")
    p.add_argument("--baseline-constants", metavar="FILE", type=non_empty_path,
                   help="ImageNet-C-bar or ImageNet-P records: normalise by the baseline numbers in FILE (TOML: "
                        "suite = \"imagenet-c-bar\" with [errors] per corruption, or suite = \"imagenet-p\" with "
                        "[fp] and [t5d] per perturbation; docs/imagenet-c.md, docs/imagenet-p.md) instead of a "
                        "model of the records")
    p.add_argument("--output", metavar="FILE", type=non_empty_path,
                   help="write the report to FILE instead of printing it")
    p.add_argument("--plot", metavar="PNG", type=non_empty_path,
                   help="also draw the drops as grouped bars (top-1 and top-5 panels); records of the sweep suite "
                        "give robustness curves instead (at PNG, or at <stem>-sweep.png beside it when both kinds are "
                        "given); drops carry their paired 95%% (Tango) intervals as error bars; ImageNet-P records "
                        "give their flip probability per perturbation with its Clopper-Pearson 95%% interval")
    p.add_argument("--ci", action="store_true",
                   help="add top-1 and top-5 tables: each error with its Clopper-Pearson 95%% interval, each drop with "
                        "its paired (Tango) interval, McNemar's p against origin (and Holm-adjusted), and the ECE with "
                        "its bootstrap interval beside the ECE a calibrated model would show")
    p.add_argument("--pairs", action="store_true",
                   help="add model-vs-model McNemar tests under each condition (Holm-adjusted) and error-consistency "
                        "(kappa) matrices")
    p.add_argument("--reliability", metavar="PNG", type=non_empty_path,
                   help="draw reliability diagrams (accuracy vs confidence, 15 bins, ECE and its intervals in the "
                        "legend) from the stored predictions of schema-2 records")
    p.add_argument("--released-vs-on-the-fly", action="store_true",
                   help="of two ImageNet-P records of one model, one made on the fly and one of the released videos "
                        "(either order; same weights, difficulty and images), print FP per perturbation from both "
                        "sources and their difference (no --allow-generator-mismatch needed)")
    p.add_argument("--model", metavar="MODEL",
                   help="with --released-vs-on-the-fly: the model to compare (default: the one both records hold)")
    _add_generator_mismatch(p)
    p.set_defaults(func=cmd_report)


def _add_export(sub: argparse._SubParsersAction) -> None:
    """``ibnbench export``."""
    p = sub.add_parser("export", help="write ImageNet-C / C-bar records as RobustBench's unaggregated_results.csv",
                       description="One row per model, two header rows (corruption, severity 1-5), each cell the "
                                   "top-1 accuracy as a fraction: the shape of RobustBench's model_info/<dataset>/"
                                   "corruptions/unaggregated_results.csv (read with pd.read_csv(path, header=[0, 1], "
                                   "index_col=0)).")
    p.add_argument("results", nargs="+", metavar="RECORD", type=non_empty_path,
                   help="ImageNet-C records, or ImageNet-C-bar records (files or directories)")
    p.add_argument("--format", default="robustbench", choices=["robustbench"],
                   help="robustbench (default): unaggregated_results.csv")
    p.add_argument("--output", metavar="FILE", type=non_empty_path, help="write to FILE instead of printing")
    _add_generator_mismatch(p)
    p.set_defaults(func=cmd_export)


def _add_robustness(sub: argparse._SubParsersAction) -> None:
    """``ibnbench robustness``."""
    p = sub.add_parser("robustness", help="effective robustness on a natural shift (Taori et al. 2020)",
                       description="Fit logit(shift accuracy) against logit(val accuracy) over the --baseline models "
                                   "(least squares) and report every model's distance from the line: effective "
                                   "robustness = shift accuracy - the accuracy the line predicts (points). Val "
                                   "accuracy is taken on the shift's class subset where the record has it (ImageNet-R, "
                                   "-A: val on their 200 classes). The 95%% intervals (er_low, er_high, the line's) "
                                   "come from a seeded percentile bootstrap over the baseline models and, where the "
                                   "records hold per-image answers, the images.")
    p.add_argument("results", nargs="+", metavar="RECORD", type=non_empty_path,
                   help="records of dataset suites (files or directories)")
    p.add_argument("--shift", required=True, metavar="ID",
                   help="the dataset row, e.g. imagenet-r, sketch, v2-matched-frequency")
    p.add_argument("--baseline", action="append", required=True, metavar="MODELS",
                   help="models that define the line (comma-separated or repeated; at least two)")
    p.add_argument("--metric", default="top1", choices=["top1", "top5"], help="accuracy from top-1 (default) or top-5")
    p.add_argument("--plot", metavar="PNG", type=non_empty_path,
                   help="draw the fit, the models and y = x on logit axes, IBN models highlighted")
    p.add_argument("--format", default="simple", choices=tabulate_formats, metavar="FORMAT",
                   help="tabulate format (default simple)")
    p.set_defaults(func=cmd_robustness)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    """``ibnbench compare``."""
    p = sub.add_parser("compare", help="paired test of two records' models on the same images (McNemar, Holm)",
                       description="For each condition both records hold, test every model of A against every model "
                                   "of B on the same images: error difference with its paired 95% (Tango) interval, "
                                   "the discordant counts and McNemar's exact p, Holm-adjusted over the table.")
    p.add_argument("a", metavar="A.json", type=non_empty_path, help="first record")
    p.add_argument("b", metavar="B.json", type=non_empty_path, help="second record (same suite and dataset)")
    p.add_argument("--metric", default="top1", choices=["top1", "top5"], help="which answers to pair (default top1)")
    p.add_argument("--format", default="markdown", choices=REPORT_FORMATS, help="as for report (default markdown)")
    _add_generator_mismatch(p)
    p.set_defaults(func=cmd_compare)


def _add_check(sub: argparse._SubParsersAction) -> None:
    """``ibnbench check``."""
    p = sub.add_parser("check", help="compare new results with recorded ones (exit 0 ok, 1 regression, 2 incomparable)")
    p.add_argument("--results", required=True, type=non_empty_path, metavar="NEW", help="the new record")
    p.add_argument("--against", required=True, type=non_empty_path, metavar="RECORDED",
                   help="the recorded (reference) record")
    p.add_argument("--tolerance", type=non_negative_float, default=0.5, metavar="POINTS",
                   help="allowed error increase in points (default 0.5)")
    p.add_argument("--metric", default="top1", choices=["top1", "top5", "drop"],
                   help="what to compare (default top1 error)")
    p.add_argument("--either-way", action="store_true",
                   help="also fail when the error moves DOWN (beyond the tolerance, or significantly)")
    p.add_argument("--test", default="tolerance", choices=["tolerance", "mcnemar"],
                   help="tolerance (default): fail when an error rises by more than --tolerance points; mcnemar: fail "
                        "only when the per-image answers changed significantly (exact McNemar test on the same images, "
                        "Holm-adjusted over the compared cells, at --alpha)")
    p.add_argument("--alpha", type=probability, default=0.01,
                   help="significance level of --test mcnemar (default 0.01)")
    _add_generator_mismatch(p)
    p.set_defaults(func=cmd_check)


def _add_leaderboard(sub: argparse._SubParsersAction) -> None:
    """``ibnbench leaderboard build`` and ``ibnbench leaderboard serve``."""
    p = sub.add_parser("leaderboard", help="leaderboards from committed records")
    lb = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    b = lb.add_parser("build", help="turn leaderboards/records/*.json into leaderboards/<suite>.md")
    b.add_argument("--root", default="leaderboards", type=non_empty_path,
                   help="leaderboard folder (default leaderboards/)")
    b.add_argument("--html", metavar="DIR", type=non_empty_path,
                   help="write the static website (index, sortable table per suite, page per model with figures, "
                        "the record JSONs) to DIR instead of the markdown boards; it works from file:// and any "
                        "static host")
    b.set_defaults(func=cmd_leaderboard)
    s = lb.add_parser("serve", help="preview a built site on http://127.0.0.1:PORT/ (localhost only)")
    s.add_argument("directory", metavar="DIR", type=non_empty_path,
                   help="the folder `leaderboard build --html DIR` wrote")
    s.add_argument("--port", type=port, default=8000, help="port on 127.0.0.1 (default 8000)")
    s.set_defaults(func=cmd_leaderboard_serve)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``ibnbench`` parser."""
    for add in (_add_report, _add_export, _add_robustness, _add_compare, _add_check, _add_leaderboard):
        add(sub)
