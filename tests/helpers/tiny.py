"""A tiny classifier for runs that score many images (ImageNet-P: 31 frames per image and perturbation): a strided
convolution, global pooling and a linear head to the 1000 classes, seeded, so that each forward costs microseconds.
``--model helpers.tiny:tiny_classifier`` runs it from the command line (a factory spec)."""
from __future__ import annotations

import torch
from torch import nn


def tiny_classifier(seed: int = 0) -> nn.Module:
    """The seeded tiny model: answers depend on colour and coarse layout, so perturbations move them."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 16, 8, stride=8), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(64, 1000))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return model


def other_tiny_classifier() -> nn.Module:
    """A second tiny model (another seed), e.g. the baseline of the first."""
    return tiny_classifier(seed=1)
