"""Commands that evaluate: run, bench, divergence, stylize, make-fake-val."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tabulate import tabulate

from ibnbench.cli.arguments import non_empty_path, positive_int, seed
from ibnbench.cli.segmentation import add_segmentation_flags
from ibnbench.errors import UsageError
from ibnbench.eval.options import RunOptions, add_flags

if TYPE_CHECKING:
    from ibnbench.results.record import Record


def cmd_run(args: argparse.Namespace) -> int:
    """Evaluate models under a suite and write the record, then print its Table-1 report."""
    from ibnbench.io import ensure_writable

    if args.output:
        ensure_writable(args.output, "record")  # in a blink, before torch is even imported
    if args.task == "segmentation":
        from ibnbench.cli.segmentation import run_segmentation_command

        return run_segmentation_command(args)
    if len(args.data) > 1:
        raise UsageError("--data is given more than once: a classification run takes one val folder")
    from ibnbench.eval.api import run

    record = run(args.model, args.data[0], suite=args.suite or "table1", options=RunOptions.from_args(args),
                 output=args.output, results_dir=args.results_dir, conditions=args.conditions, weights=args.weights,
                 preprocessing=args.preprocessing, labels=args.labels, resume=args.resume, restart=args.restart,
                 skip_missing=args.skip_missing, style_weights=_style_weights(args.style_weights),
                 classes_from_folders=args.classes_from_folders, classes=args.classes,
                 restrict_to_classes=args.restrict_to_classes)
    if record.path:
        print_summary(record)
        print(f"\nrecord: {record.path}")
    return 0


def _rate(per_second: float) -> str:
    """A rate with one decimal, or two significant digits below 1 (a slow run is not "0.0 images/s")."""
    return f"{per_second:.1f}" if per_second >= 1 else f"{per_second:.2g}"


def print_summary(record: Record) -> None:
    """The Table-1 report of a finished run, what it skipped and how fast it went."""
    from ibnbench.results.report import layout, render

    print("\n\n".join(f"{name}\n\n{render(t, 'markdown')}" if name else render(t, "markdown")
                      for name, t in layout([record]).items()))
    timing = record.timing
    if timing.get("images_per_s"):
        conditions = len(record.results) // len(record.models)
        print(f"\n{timing['images']} images x {len(record.models)} model(s) x {conditions} condition(s) in "
              f"{timing['seconds']:.1f} s: {_rate(timing['images_per_s'])} images/s")
    skipped = record.dataset.get("n_skipped", 0)
    if skipped:
        print(f"\n{skipped} unreadable image(s) skipped: {', '.join(record.dataset['skipped'][:5])}"
              + (" ..." if skipped > 5 else ""))
    not_run = [c["id"] for c in record.conditions if c.get("not_run") and not c.get("missing")]
    if not_run:
        print(f"not run (missing assets): {', '.join(not_run)}")
    for condition in record.conditions:
        if condition.get("missing"):
            print(f"missing dataset {condition['id']}: {condition['missing']}")
    classes = record.dataset.get("classes")
    if classes:
        print(f"\nscored on {classes['n']} classes ({classes['mask']}): argmax and top-5 over their logits only")
    close_calls = record.environment.get("close_calls_left")
    if close_calls:
        print(f"\n{close_calls} close call(s) decided in {record.environment['dtype']} were not scored again in "
              f"fp32 (--refine {record.environment['refine']}): raise --refine, or use --amp off, for exact answers")


def _style_weights(pairs: list[str] | None) -> dict[str, str] | None:
    """``["monet=random", "cezanne=/w/c.pth"]`` -> ``{"monet": "random", ...}``."""
    if not pairs:
        return None
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise UsageError(f"--style-weights takes STYLE=SPEC (e.g. monet=random), not {bad[0]!r}")
    return dict(p.split("=", 1) for p in pairs)


def cmd_divergence(args: argparse.Namespace) -> int:
    """Per-layer feature divergence between two domains, as a table (plus JSON and PNG if asked)."""
    from ibnbench.eval.plan import weights_per_model
    from ibnbench.io import ensure_writable
    from ibnbench.tools.divergence import divergence, plot_divergence

    for path, what in ((args.output, "result"), (args.plot, "plot")):
        if path:
            ensure_writable(path, what)  # before any model runs

    layers = "auto" if args.layers == "auto" else [n.strip() for n in args.layers.split(",") if n.strip()]
    results = [divergence(m, args.data, data_b=args.data_b, condition=args.condition, suite=args.suite,
                          split_classes=args.split_classes, layers=layers,
                          limit=args.limit, device=args.device, weights=w, batch_size=args.batch_size)
               for m, w in zip(args.model, weights_per_model(args.weights, args.model, "official"))]
    for result in results:
        print(f"{result['model']}: {result['domain_a']} vs {result['domain_b']} "
              f"({result['n_a']} / {result['n_b']} images)")
        print(tabulate([(e["name"], e["divergence"], e["channels"], e["excluded"]) for e in result["layers"]],
                       headers=["layer", "divergence", "channels", "excluded"], floatfmt=".4f", missingval="n/a"))
    if args.output:
        from ibnbench.io import write_json_atomic

        write_json_atomic(args.output, results[0] if len(results) == 1 else results)
        print(f"wrote {args.output}")
    if args.plot:
        print(f"wrote {plot_divergence(results, args.plot)}")
    return 0


def severity_list(text: str) -> tuple[int, ...]:
    """``3``, ``1-5``, ``1,3,5`` or ``all`` as sorted severities 1-5."""
    if text == "all":
        return (1, 2, 3, 4, 5)
    chosen: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.partition("-")
        high = high if dash else low
        if not (low.isdigit() and high.isdigit() and 1 <= int(low) <= int(high) <= 5):
            raise argparse.ArgumentTypeError(f"expected severities 1-5 as 3, 1-5, 1,3,5 or all, not {text!r}")
        chosen.update(range(int(low), int(high) + 1))
    return tuple(sorted(chosen))


def cmd_bench(args: argparse.Namespace) -> int:
    """Synthetic throughput per model, or the fan-out vs baseline comparison on a dataset."""
    from ibnbench.cli.allocator import keep_freed_memory
    from ibnbench.tools.bench import compare_baseline, corruption_table, corruptions, pipeline, throughput

    RunOptions.from_args(args)  # its flags checked in one place, before any work
    if args.imagenet_p or args.c_bar:
        return _bench_generation(args)
    if args.corruptions:
        if not args.data:
            raise UsageError("--corruptions needs --data DIR (the crops both implementations corrupt)")
        out = corruptions(args.data, limit=args.limit or 4, batch_size=args.batch_size, device=args.device,
                          conditions=args.conditions, reference=args.reference or "imagecorruptions:corrupt",
                          severities=args.severities, repeat=args.repeat, threads=args.threads)
        print(corruption_table(out))
        print(f"{_timing_footer(out)}, ms per image; "
              f"allocator: {'freed memory kept for reuse' if keep_freed_memory() else 'the system default'}")
        return 0
    if not args.model:
        raise UsageError("give --model NAME (every mode but --corruptions, --imagenet-p and --c-bar times models)")
    if args.pipeline:
        if not args.data:
            raise UsageError("--pipeline needs --data DIR")
        out = pipeline(args.model, args.data, suite=args.suite, conditions=args.conditions, weights=args.weights,
                       limit=args.limit or 256, batch_size=args.batch_size, device=args.device, amp=args.amp,
                       channels_last=args.channels_last, workers=args.workers, refine=args.refine,
                       cache=args.cache)
        print(tabulate(out["stages"], headers="keys"))
        print(f"\n{out['n_images']} images, {out['pairs']} (model, condition) pairs, device {out['device']}")
        return 0
    if args.compare_baseline:
        if not args.data:
            raise UsageError("--compare-baseline needs --data DIR")
        out = compare_baseline(args.model, args.data, suite=args.suite, conditions=args.conditions,
                               weights=args.weights, batch_size=args.batch_size, workers=args.workers,
                               device=args.device, limit=args.limit, amp=args.amp,
                               channels_last=args.channels_last, refine=args.refine, progress=False)
        rows = [(mode, out[mode]["seconds"], out[mode]["decodes"]) for mode in ("fanout", "baseline")]
        print(tabulate(rows, headers=["mode", "seconds", "decodes"]))
        print(f"\n{len(args.model)} model(s) x {len(out['fanout']['results']) // len(args.model)} condition(s) "
              f"on {out['n_images']} images: fan-out is {out['speedup']}x faster than one pass per pair; "
              f"identical counts: {out['identical_counts']}")
        return 0
    rows = [throughput(m, batch_size=args.batch_size, amp=args.amp if args.amp != "auto" else "off",
                       channels_last=args.channels_last, compile=args.compile, device=args.device,
                       iters=args.iters) for m in args.model]
    print(tabulate(rows, headers="keys"))
    return 0


def _bench_generation(args: argparse.Namespace) -> int:
    """``bench --imagenet-p`` / ``--c-bar``: generation speed, ours and (with ``--reference``) the reference's."""
    from ibnbench.tools import generation_speed

    mode = "--imagenet-p" if args.imagenet_p else "--c-bar"
    if args.imagenet_p and args.c_bar:
        raise UsageError("give one of --imagenet-p and --c-bar")
    if not args.data:
        raise UsageError(f"{mode} needs --data DIR (the crops both implementations start from)")
    common = {"limit": args.limit or 2, "batch_size": args.batch_size, "device": args.device,
              "reference": args.reference, "repeat": args.repeat, "threads": args.threads}
    if args.imagenet_p:
        out = generation_speed.imagenet_p(args.data, perturbations=args.conditions, difficulty=args.difficulty,
                                          **common)
    else:
        out = generation_speed.c_bar(args.data, names=args.conditions, **common)
    print(generation_speed.speed_table(out))
    print(_timing_footer(out))
    return 0


def _timing_footer(out: dict) -> str:
    """Under a side-by-side speed table: what was timed, where, and how the medians were taken."""
    return (f"{out['n_images']} image(s), ours in batches of {out['batch_size']} on {out['device']} "
            f"({out['threads']} threads), medians of {out['repeat']} interleaved repeat(s)")


def cmd_make_fake_val(args: argparse.Namespace) -> int:
    """Write a synthetic ImageNet-like val folder."""
    from ibnbench.tools.fake_val import make_fake_val

    print(f"wrote {make_fake_val(args.n, args.out, seed=args.seed, workers=args.workers)}")
    return 0


def cmd_stylize(args: argparse.Namespace) -> int:
    """Write a stylised copy of a dataset."""
    from ibnbench.tools.stylize import stylize

    summary = stylize(args.style, args.data, args.out, weights=args.weights, device=args.device,
                      limit=args.limit, size=args.size, workers=args.workers, resize_mode=args.resize,
                      crop=args.crop)
    print(f"stylize {args.style}: {summary['written']} written, {summary['skipped']} already present, "
          f"{summary['total']} in all -> {summary['out']}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``ibnbench`` parser."""
    for add in (_add_run, _add_divergence, _add_bench, _add_make_fake_val, _add_stylize):
        add(sub)


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="evaluate models under a condition suite (the paper's Table 1 by default)",
                       description="Decode the validation set once, apply every condition of the suite on the device, "
                                   "feed every condition to every model, and write a JSON record plus a Table-1 "
                                   "report.")
    p.add_argument("--model", action="append", required=True, metavar="NAME",
                   help="registered model (see `ibnbench models`), timm:NAME, torchvision:NAME or pkg.mod:factory; "
                        "repeat")
    p.add_argument("--task", choices=("classification", "segmentation"), default="classification",
                   help="classification (default) or segmentation: segmentation models on --data NAME=PATH datasets "
                        "(docs/segmentation.md)")
    p.add_argument("--data", type=non_empty_path, required=True, action="append", metavar="DIR",
                   help="ImageNet val folder (val/<wnid>/*.JPEG, flat with labels, or ImageNetV2's "
                        "<class index>/*.jpeg); with --task segmentation NAME=PATH, repeated (cityscapes, acdc, "
                        "bdd100k, mapillary, gta5, synthia)")
    p.add_argument("--labels", type=non_empty_path, metavar="FILE",
                   help="labels for a flat folder: LOC_val_solution.csv or '<file> <index>' lines")
    classes = p.add_mutually_exclusive_group()
    classes.add_argument("--classes-from-folders", action="store_true",
                         help="score on the classes of the dataset's class folders only (argmax and top-5 over their "
                              "logits: the protocol of ImageNet-R and -A, 200 classes); without it every dataset is "
                              "a 1000-way task, a subset of val too")
    classes.add_argument("--classes", type=non_empty_path, metavar="FILE",
                         help="score on the classes listed in FILE only (one wnid or class index per line)")
    p.add_argument("--restrict-to-classes", action="store_true",
                   help="with --classes FILE: keep only the images of those classes (ImageNet val on ImageNet-R's "
                        "200 classes, the baseline its gap is measured against)")
    p.add_argument("--suite", type=non_empty_path,
                   help="condition suite name or TOML path (default table1; see `ibnbench suites`), or a dataset suite "
                        "(natural: val, ImageNetV2, -Sketch, -R, -A, Stylized-ImageNet; paths from $IBNBENCH_DATA); "
                        "with --task segmentation: none (default), table1, imagenet-c (Cityscapes-C) or a TOML path")
    p.add_argument("--conditions", type=lambda s: [c for c in s.split(",") if c], metavar="IDS",
                   help="comma-separated subset of the suite's condition ids (of a dataset suite: dataset ids)")
    p.add_argument("--weights", action="append", metavar="SPEC",
                   help="official (default), random, a path or a URL; once for all models or once per --model")
    p.add_argument("--output", type=non_empty_path, metavar="FILE",
                   help="record path (default: RESULTS_DIR/<suite>-<models>-<time>.json)")
    p.add_argument("--results-dir", type=non_empty_path, default="results", metavar="DIR",
                   help="where records go by default (default results/)")
    p.add_argument("--preprocessing", action="append", metavar="SPEC",
                   help="resize=274,crop=240,mean=127,std=128[,interpolation=bicubic]: the model's eval preprocessing "
                        "(mean/std: one value or three, on the 0..255 scale; keys left out keep the model's own); "
                        "once for all models or once per --model. Default: what the model declares (registry, "
                        "timm/torchvision config, factory attribute), else torchvision's ImageNet default, assumed")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last completed chunk")
    p.add_argument("--restart", action="store_true",
                   help="delete an interrupted run's checkpoint and start over (a run that finds one stops otherwise)")
    p.add_argument("--style-weights", action="append", metavar="STYLE=SPEC",
                   help="generator weights for a style condition: official, random, a path or a URL (repeat per style)")
    p.add_argument("--skip-missing", action="store_true",
                   help="report conditions with missing assets as not run instead of stopping")
    add_segmentation_flags(p)
    add_flags(p.add_argument_group("how to run"))
    p.set_defaults(func=cmd_run)


def _add_divergence(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("divergence", help="feature divergence between two domains, layer by layer (paper Sec. 4.3)",
                       description="For each layer and channel, fit a Gaussian to the channel's spatial mean over "
                                   "each domain; report the mean symmetric KL divergence over channels per layer. "
                                   "KL(A||B) = log(s_B/s_A) + (s_A^2 + (mu_A - mu_B)^2) / (2 s_B^2) - 1/2: the paper's "
                                   "Eq. 2 prints mu_B^2 instead of (mu_A - mu_B)^2 and inverts the log ratio; "
                                   "this is the corrected form. Channels constant in one domain only (infinite KL) "
                                   "are left out of the mean and counted as 'excluded'.")
    p.add_argument("--model", action="append", required=True, metavar="NAME",
                   help="model to analyse; repeat to compare")
    p.add_argument("--weights", action="append", metavar="SPEC", help="official (default), random, a path or a URL")
    p.add_argument("--data", type=non_empty_path, required=True, metavar="DIR",
                   help="domain A images (ImageNet val layout)")
    domain = p.add_mutually_exclusive_group(required=True)
    domain.add_argument("--data-b", type=non_empty_path, metavar="DIR", help="domain B: a second folder")
    domain.add_argument("--condition", metavar="ID", help="domain B: domain A under this condition of --suite")
    domain.add_argument("--split-classes", action="store_true", help="content shift: classes 0-499 vs 500-999")
    p.add_argument("--suite", type=non_empty_path, default="table1", help="suite holding --condition (default table1)")
    p.add_argument("--layers", default="auto", help="auto (main-path ReLU outputs) or comma-separated module names")
    p.add_argument("--limit", type=int, metavar="N", help="use the first N images (sorted order) of each domain")
    p.add_argument("--device", help="cuda or cpu (default: cuda if available)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--output", type=non_empty_path, metavar="FILE",
                   help="write the result as JSON (a list with several --model)")
    p.add_argument("--plot", type=non_empty_path, metavar="PNG",
                   help="bar chart in the style of the paper's Fig. 5, models side by side")
    p.set_defaults(func=cmd_divergence)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="synthetic throughput per model, or fan-out vs baseline on a dataset")
    p.add_argument("--model", action="append", metavar="NAME",
                   help="model to time (required except with --corruptions, --imagenet-p, --c-bar)")
    p.add_argument("--weights", action="append", metavar="SPEC", help="for --compare-baseline (default random)")
    add_flags(p.add_argument_group("how to run"),
              ["batch_size", "amp", "refine", "channels_last", "compile", "device", "cache", "limit", "workers"],
              workers=0)
    p.add_argument("--iters", type=int, default=10, help="timed iterations after warm-up (default 10)")
    p.add_argument("--compare-baseline", action="store_true",
                   help="time the fan-out engine against one pass per (model, condition) on --data")
    p.add_argument("--pipeline", action="store_true",
                   help="time each stage of a real run (decode, crop, conditions, forwards) and the whole on --data")
    p.add_argument("--corruptions", action="store_true",
                   help="time our ImageNet-C ops against the reference package on the same crops of --data "
                        "(--limit images, default 4; --conditions to pick; --model is ignored)")
    p.add_argument("--imagenet-p", action="store_true",
                   help="time generating every frame of the ImageNet-P perturbations (--conditions to pick) on "
                        "--data's crops, against --reference if given (--limit images, default 2)")
    p.add_argument("--c-bar", action="store_true",
                   help="time the ImageNet-C-bar corruptions at all 5 severities (--conditions to pick) on --data's "
                        "crops, against --reference if given (--limit images, default 2)")
    p.add_argument("--difficulty", type=int, choices=(1, 2, 3), default=1,
                   help="--imagenet-p: the noise perturbations' difficulty (default 1)")
    p.add_argument("--reference", metavar="MODULE:FUNC",
                   help="the reference function (MODULE:FUNC or FILE.py:FUNC); --corruptions: default "
                        "imagecorruptions:corrupt; --imagenet-p / --c-bar: none (ours alone), e.g. "
                        "benchmarks/references/imagenet_p.py:sequence or benchmarks/references/c_bar.py:corrupt")
    p.add_argument("--severities", type=severity_list, default=(3,), metavar="LIST",
                   help="--corruptions: severities to time: 3 (default), 1-5, 1,3,5 or all")
    p.add_argument("--repeat", type=positive_int, default=3,
                   help="--corruptions, --imagenet-p, --c-bar: interleaved repeats of ours and the reference; "
                        "medians kept (default 3)")
    p.add_argument("--threads", type=positive_int,
                   help="--corruptions, --imagenet-p, --c-bar: torch's intra-op threads for ours (default torch's; "
                        "the reference uses one)")
    p.add_argument("--data", type=non_empty_path, metavar="DIR",
                   help="dataset for --pipeline / --compare-baseline / --corruptions / --imagenet-p / --c-bar")
    p.add_argument("--suite", type=non_empty_path, default="table1")
    p.add_argument("--conditions", type=lambda s: [c for c in s.split(",") if c], metavar="IDS")
    p.set_defaults(func=cmd_bench)


def _add_make_fake_val(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-fake-val", help="write a synthetic ImageNet-like val folder (for timing without ImageNet)")
    p.add_argument("--n", type=positive_int, default=50000, help="number of images (default 50000)")
    p.add_argument("--out", required=True, metavar="DIR", type=non_empty_path)
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--workers", type=positive_int, help="processes (default: all cores)")
    p.set_defaults(func=cmd_make_fake_val)


def _add_stylize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stylize", help="write a CycleGAN-stylised copy of a dataset (for `op = \"dir\"` conditions)")
    p.add_argument("--style", required=True, help="monet, cezanne, ukiyoe or vangogh (or any name with --weights)")
    p.add_argument("--data", type=non_empty_path, required=True,
                   help="dataset folder; every .jpg/.jpeg/.png under it is stylised")
    p.add_argument("--out", type=non_empty_path, required=True,
                   help="output folder (same relative paths; existing files are skipped)")
    p.add_argument("--weights", help="generator weights: official (default), a path, a URL or random")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--limit", type=int, help="only the first N images in sorted path order")
    p.add_argument("--size", type=int, default=256, help="size the images are resized to (default 256)")
    p.add_argument("--resize", choices=["shorter", "square", "crop"], default="shorter",
                   help="shorter: shorter side to --size, bilinear, aspect kept (default; what the classifiers' "
                        "resize sees); square: --size x --size bicubic, as the CycleGAN authors' test script; crop: "
                        "the classifier's centre crop (--crop) of that resize, saved as PNG, for `run --style-dir "
                        "STYLE=OUT`. Recorded in OUT/stylize.json and in the records of runs that read OUT")
    p.add_argument("--crop", type=positive_int, default=224, help="with --resize crop: the crop side (default 224)")
    p.add_argument("--workers", type=int, default=4, help="decoding worker processes (default 4)")
    p.set_defaults(func=cmd_stylize)
