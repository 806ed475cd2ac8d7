"""The CycleGAN photo-to-painting generators of the paper's style conditions: where the authors' released
weights lie (``$IBNBENCH_STYLE_WEIGHTS_DIR``, the torch hub cache, their URL), and the generator built from them.
Style conditions receive this module as their generator source (:class:`ibnbench.conditions.style.GeneratorSource`)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ibnbench.io import cache_dir, checkpoint_file, fetch, is_url, sha256_of
from ibnbench.zoo import create_model
from ibnbench.zoo.meta import LoadedWeights
from ibnbench.zoo.weights import load_state_dict_strict, read_state_dict

STYLE_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/style_{style}.pth"
WEIGHTS_DIR_ENV = "IBNBENCH_STYLE_WEIGHTS_DIR"
GENERATOR = "cyclegan_resnet_9blocks"
RANDOM_GENERATOR_SEED = 0


def official_candidates(style: str) -> list[Path]:
    """Where the released ``style_<name>.pth`` may lie: ``$IBNBENCH_STYLE_WEIGHTS_DIR``, then the hub cache."""
    filename = STYLE_URL.format(style=style).rsplit("/", 1)[-1]
    folders = [Path(os.environ[WEIGHTS_DIR_ENV]).expanduser()] if os.environ.get(WEIGHTS_DIR_ENV) else []
    return [folder / filename for folder in folders + [cache_dir()]]


def missing_style_weights(style: str, weights: str = "official") -> str | None:
    """A description of the absent weights file for ``style`` (None when present or random); no network."""
    if weights == "random":
        return None
    if weights == "official" or is_url(weights):
        url = STYLE_URL.format(style=style) if weights == "official" else weights
        candidates = official_candidates(style) if weights == "official" else [cache_dir() / url.rsplit("/", 1)[-1]]
        if any(path.is_file() for path in candidates):
            return None
        where = " or ".join(str(p) for p in candidates)
        return (f"CycleGAN generator weights for style {style!r}: download {url} and place it at {where} "
                f"(or set ${WEIGHTS_DIR_ENV} to a folder holding it)")
    if not Path(weights).expanduser().is_file():
        return f"CycleGAN generator weights for style {style!r}: {weights} does not exist"
    return None


def _resolve(style: str, weights: str, progress: bool) -> Path:
    if weights == "official":
        present = next((p for p in official_candidates(style) if p.is_file()), None)
        return present or fetch(STYLE_URL.format(style=style), None, f"style {style!r}", progress)
    return checkpoint_file(weights, f"style {style!r}", progress)


def load_generator(style: str, weights: str = "official", progress: bool = True) -> nn.Module:
    """The CycleGAN generator for ``style`` in eval mode, with ``ibnbench_weights``
    (:class:`~ibnbench.zoo.meta.LoadedWeights`: source, path, sha256)."""
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_GENERATOR_SEED)
            return create_model(GENERATOR)  # noted as random by create_model
    path = _resolve(style, weights, progress)
    generator = create_model(GENERATOR)
    load_state_dict_strict(generator, read_state_dict(path), f"{GENERATOR} (style {style!r})", origin=str(path))
    generator.ibnbench_weights = LoadedWeights(source=weights, path=str(path), sha256=sha256_of(path))
    return generator.eval()
