"""How to run (:class:`RunOptions`) and what to run (:class:`RunRequest`), kept free of heavy imports so that
``ibnbench --help`` can show its defaults without loading torch. Each option field carries its command-line help:
``run`` and ``bench`` build their flags from it (:func:`add_flags`), so defaults and help live in one place."""
from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ibnbench.errors import UsageError

if TYPE_CHECKING:
    import torch

    from ibnbench.data.classes import ClassSubset

AMP_NAMES = ("bf16", "fp16")
MAX_BATCH = 4096
"""Largest --batch-size: 4096 224-pixel crops already take 2.3 GiB in float32 (a larger one is a typo, and an
allocation that fails before any out-of-memory halving can help)."""


def _flag(default: Any, help: str, **argparse_options: Any) -> Any:
    """A field with its command-line help (``%(default)s`` shows the default) and argparse options."""
    return field(default=default, metadata={"help": help, **argparse_options})


@dataclass
class RunOptions:
    """How to run (not what): device, batching, precision, resumability."""

    device: str | None = _flag(None, "cuda, cuda:1, cpu (default: cuda if available)", type=str)
    batch_size: int = _flag(64, f"images per batch, at most {MAX_BATCH} (halved automatically on out-of-memory; "
                                "default %(default)s)", metavar="N")
    workers: int = _flag(min(8, os.cpu_count() or 1), "decode worker processes (default %(default)s)", metavar="N")
    amp: str = _flag("auto", "autocast dtype (auto: bf16 on CUDA, off on CPU)", choices=("auto", *AMP_NAMES, "off"))
    channels_last: bool = _flag(False, "run models in channels_last memory format")
    compile: bool = _flag(False, "torch.compile the models, their batch norms folded into the convolutions "
                                         "before them (those inside IBN layers kept)")
    limit: int | None = _flag(None, "evaluate only the first N images (sorted order)", type=int, metavar="N")
    subset: str | None = _flag(None, "evaluate only the images FILE lists, one a line: <folder>/<file> as in "
                                     "RobustBench's imagenet_test_image_ids.txt, or a file name (--limit applies "
                                     "after it; the record names the list)", type=str, metavar="FILE")
    chunk_size: int = _flag(2048, "images per checkpoint: the unit --resume restarts from (default %(default)s)",
                            metavar="N")
    on_bad_image: str = _flag("fail", "corrupt image: stop (default) or skip and count it", choices=("fail", "skip"))
    decoder: str = _flag("auto", "JPEG decoding: nvjpeg on the GPU (auto on CUDA) or cpu workers (auto elsewhere)",
                         choices=("auto", "cpu", "nvjpeg"))
    cache: str | None = _flag(None, "keep the decoded uint8 crops: in folder DIR (memory-mapped, reused by later runs "
                                    "on the same data; ~7.5 GB per 50k images and crop size) or in device memory for "
                                    "this process (gpu)", type=str, metavar="DIR|gpu")
    refine: float = _flag(0.125, "under --amp bf16/fp16, the share of each batch nearest a top-1/top-5 decision that "
                                 "is scored again in fp32, so reduced precision does not move near ties (default "
                                 "%(default)s; 0 turns it off)", metavar="SHARE")
    style_dir: list[str] | None = _flag(None, "read a style's output pre-rendered by `ibnbench stylize --resize crop` "
                                              "from DIR instead of running its generator (repeat per style)",
                                        type=str, action="append", metavar="STYLE=DIR")
    difficulty: int = _flag(1, "ImageNet-P suites: difficulty 1, 2 or 3 (the noise strength of the noise "
                               "perturbations; the others' metrics compare frames that far apart; default "
                               "%(default)s)", choices=(1, 2, 3), metavar="N")
    overlap: bool = _flag(False, "on CUDA, compute each batch's next condition on a second stream while the models "
                                 "score the current one (no effect elsewhere)")
    fanout: bool = _flag(True, "baseline mode: one pass over the data per (model, condition), like peers do",
                         flag="--no-fanout")
    progress: bool = _flag(True, "no progress bars or lines", flag="--no-progress")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field (the one place they are checked), before any image is decoded or weight loaded:
        :func:`ibnbench.run` checks again, so options changed after they were made are caught as well."""
        for name in ("batch_size", "workers", "chunk_size", "limit", "difficulty"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise UsageError(f"--{name.replace('_', '-')} must be a whole number, not {value!r}")
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices is not None and getattr(self, f.name) not in choices:
                raise UsageError(f"--{f.name.replace('_', '-')} must be one of {', '.join(map(str, choices))}, "
                                 f"not {getattr(self, f.name)!r}")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise UsageError(f"--batch-size must be 1 to {MAX_BATCH} images, not {self.batch_size}")
        if self.workers < 0:
            raise UsageError(f"--workers must not be negative, not {self.workers}")
        if self.chunk_size < 1:
            raise UsageError(f"--chunk-size must be at least 1 image, not {self.chunk_size}")
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"--limit must be a positive number of images, got {self.limit}")
        if not 0.0 <= self.refine <= 1.0:
            raise UsageError(f"--refine must be a share of the batch between 0 and 1, not {self.refine}")
        if self.subset is not None and not Path(self.subset).expanduser().is_file():
            raise UsageError(f"--subset {self.subset}: no such file")
        if self.cache is not None and self.cache != "gpu":
            _check_cache_folder(self.cache)
        self.style_dirs()
        self.resolved_device()

    def style_dirs(self) -> dict[str, str]:
        """``--style-dir`` as ``{style: folder}``."""
        pairs = self.style_dir or []
        bad = next((p for p in pairs if p.count("=") < 1 or not all(p.split("=", 1))), None)
        if bad is not None:
            raise UsageError(f"--style-dir takes STYLE=DIR (e.g. monet=/data/val-monet), not {bad!r}")
        return dict(p.split("=", 1) for p in pairs)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        """The options the parsed command line gave (the flags :func:`add_flags` added)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    def resolved_device(self) -> torch.device:
        from ibnbench.eval.distributed import resolve_device

        return resolve_device(self.device)

    def resolved_decoder(self, device: torch.device) -> str:
        """nvJPEG on CUDA, CPU workers otherwise (``decoder="auto"``)."""
        return self.decoder if self.decoder != "auto" else ("nvjpeg" if device.type == "cuda" else "cpu")

    def precision(self, device: torch.device) -> tuple[str, float | None]:
        """The dtype the models run in (``"float32"``, ``"bfloat16"``, ``"float16"``) and the ``refine`` share
        (None in full precision), as records note them."""
        import torch

        dtype = self.amp_dtype(device)
        return str(dtype or torch.float32).removeprefix("torch."), self.refine if dtype else None

    def amp_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype (``auto``: bf16 on CUDA), or None for full precision."""
        from ibnbench.precision import AMP_DTYPES

        return AMP_DTYPES.get(self.amp if self.amp != "auto" else ("bf16" if device.type == "cuda" else "off"))


def _check_cache_folder(spec: str) -> None:
    """``--cache DIR`` must name a folder (created later) with no file in its place or on its path."""
    if not spec.strip():
        raise UsageError("--cache: give a folder or gpu, not an empty value")
    path = Path(spec).expanduser()
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UsageError(f"--cache {spec}: {blocker} is a file, not a folder")


def add_flags(parser: argparse.ArgumentParser, names: Iterable[str] | None = None, **defaults: Any) -> None:
    """Add the flags of :class:`RunOptions` (all, or ``names``) to ``parser``; ``defaults`` override a field's."""
    wanted = None if names is None else set(names)
    for f in fields(RunOptions):
        if wanted is not None and f.name not in wanted:
            continue
        meta = dict(f.metadata)
        default = defaults.get(f.name, f.default if f.default is not MISSING else None)
        flag = meta.pop("flag", "--" + f.name.replace("_", "-"))
        if isinstance(default, bool):
            action = "store_false" if flag.startswith("--no-") else "store_true"
            parser.add_argument(flag, dest=f.name, action=action, help=meta["help"])
            continue
        meta.setdefault("type", type(default))
        parser.add_argument(flag, dest=f.name, default=default, **meta)


@dataclass(frozen=True)
class RunRequest:
    """What to run (not how): ``models`` on ``data`` under ``suite`` (or its ``conditions``; of a dataset suite,
    dataset ids), each model's ``weights`` and ``preprocessing``, where the record goes and what to do with an
    interrupted run. The arguments of :func:`ibnbench.run`, which documents each."""

    models: Sequence[str]
    data: str | os.PathLike
    suite: str | os.PathLike = "table1"
    conditions: Sequence[str] | None = None
    weights: Sequence[str] | None = None
    preprocessing: Sequence[str] | None = None
    labels: str | os.PathLike | None = None
    output: str | os.PathLike | None = None
    results_dir: str | os.PathLike = "results"
    resume: bool = False
    restart: bool = False
    skip_missing: bool = False
    style_weights: Mapping[str, str] | None = None
    classes_from_folders: bool = False
    classes: str | os.PathLike | ClassSubset | None = None
    restrict_to_classes: bool = False
